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
