import os
import stat

from transferkit.io import save_with, write_json


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o022)
    try:
        p = write_json(tmp_path / "a.json", {"x": 1})
        q = save_with(tmp_path / "b.bin", lambda tmp: open(tmp, "wb").write(b"1"))
    finally:
        os.umask(mask)
    for f in (p, q):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    import torch

    from transferkit.io import load_state_tree, save_state_tree

    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    for opt_cls, kw in ((torch.optim.AdamW, {}), (torch.optim.SGD, {"momentum": 0.9})):
        opt = opt_cls([{"params": params, "lr": 0.1, "name": "head"}], **kw)
        sum((p ** 2).sum() for p in params).backward()
        opt.step()
        sd = opt.state_dict()
        save_state_tree(tmp_path / "opt", sd)
        assert not list(tmp_path.glob("*.pt"))
        back = load_state_tree(tmp_path / "opt")
        assert back["param_groups"] == sd["param_groups"]
        assert set(back["state"]) == set(sd["state"]) == {0, 1}
        for i, st in sd["state"].items():
            for k, v in st.items():
                assert torch.equal(back["state"][i][k], v) if torch.is_tensor(v) else back["state"][i][k] == v
        opt.load_state_dict(back)  # accepted as it is
