"""Run folders, checkpoints and interruption: a damaged checkpoint is named and refused, a
finished run resumes to the same bundle, a run folder is never overwritten by accident."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from transferkit.cli import main
from transferkit.engine.checkpoint import FORMAT, read_checkpoint

from conftest import interrupt_after, make_image_folder

SETTINGS = ["--backbone", "tiny-cnn", "--strategy", "finetune", "-o", "head_epochs=1",
            "--epochs", "1", "--batch-size", "4", "--workers", "0", "--seed", "1", "-q"]
FREEZE = ["--backbone", "tiny-cnn", "--strategy", "freeze", "--batch-size", "4", "--workers",
          "0", "-q"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code, err, *needles, exit_code=2):
    assert code == exit_code, err
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def tensors(path: Path) -> dict:
    return load_file(str(path))


def same_tensors(a: Path, b: Path) -> bool:
    x, y = tensors(a), tensors(b)
    return x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x)


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-stage run (head, then fine-tuning) and its data."""
    root = tmp_path_factory.mktemp("runs")
    data = make_image_folder(root / "imgs", per_class=6)
    code = main(["fit", str(data), *SETTINGS, "--out", str(root / "done"),
                 "--cache-dir", str(root / "cache")])
    assert code == 0
    return root, data


def copy_run(finished, tmp_path, name="run") -> Path:
    root, _ = finished
    dst = tmp_path / name
    shutil.copytree(root / "done", dst)
    rc = json.loads((dst / "run_config.json").read_text())
    rc["run"]["out"] = str(dst)
    rc["run"]["cache_dir"] = str(tmp_path / "cache")
    (dst / "run_config.json").write_text(json.dumps(rc))
    return dst


def epoch_folder(run_dir: Path) -> Path:
    st = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    return run_dir / "checkpoint" / st["folder"]


# ----------------------------------------------------------------------------- the format

def test_a_checkpoint_is_one_verified_folder_named_by_the_manifest(finished):
    root, _ = finished
    ck = root / "done" / "checkpoint"
    st = json.loads((ck / "state.json").read_text())
    assert st["format"] == FORMAT and (st["stage"], st["epoch"]) == (1, 1)
    entries = sorted(p.name for p in ck.iterdir())
    assert entries == sorted(["state.json", st["folder"]])  # older epochs are gone
    assert set(st["files"]) == {"model.safetensors", "best.safetensors", "optimizer.json",
                                "optimizer.safetensors"}
    for name, entry in st["files"].items():
        data = (ck / st["folder"] / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    restored = read_checkpoint(ck)
    assert restored.position["history"] == st["history"]


def test_resuming_a_finished_run_writes_the_same_results_again(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    before = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").unlink()
    (run_dir / "bundle" / "model.safetensors").unlink()
    code, out, err = run(["fit", "--resume", run_dir], capsys)
    assert code == 0, err
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["val"] == before["val"] and after["test"] == before["test"]
    assert same_tensors(run_dir / "bundle" / "model.safetensors",
                        finished[0] / "done" / "bundle" / "model.safetensors")


def test_resuming_a_finished_run_says_so(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    code, out, err = run(["fit", "--resume", run_dir], capsys)
    assert code == 0, err
    assert "the run had finished training" in out + err


# ----------------------------------------------------------------------------- damage

def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("damage,needle", [
    ("state.json truncated", "state.json"),
    ("state.json empty", "state.json"),
    ("model truncated", "model.safetensors"),
    ("best flipped", "best.safetensors"),
    ("optimizer missing", "optimizer.safetensors"),
    ("folder missing", "the folder state.json names is missing"),
    ("state.json not a table", "state.json"),
])
def test_a_damaged_checkpoint_is_named_and_refused(finished, tmp_path, capsys, damage, needle):
    run_dir = copy_run(finished, tmp_path)
    manifest = run_dir / "checkpoint" / "state.json"
    folder = epoch_folder(run_dir)
    if damage == "state.json truncated":
        _truncate(manifest, 40)
    elif damage == "state.json empty":
        manifest.write_bytes(b"")
    elif damage == "model truncated":
        _truncate(folder / "model.safetensors", 100)
    elif damage == "best flipped":
        data = bytearray((folder / "best.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (folder / "best.safetensors").write_bytes(bytes(data))
    elif damage == "optimizer missing":
        (folder / "optimizer.safetensors").unlink()
    elif damage == "folder missing":
        shutil.rmtree(folder)
    else:
        manifest.write_text("[1, 2]")
    before = digest(run_dir)
    code, _, err = run(["fit", "--resume", run_dir, "-q"], capsys)
    line = one_error_line(code, err, needle, "checkpoint is damaged")
    assert str(run_dir / "checkpoint") in line
    assert digest(run_dir) == before  # nothing was written


def test_a_damaged_checkpoint_of_the_old_layout_is_named(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    _to_old_layout(run_dir)
    _truncate(run_dir / "checkpoint" / "model.safetensors", 100)
    code, _, err = run(["fit", "--resume", run_dir, "-q"], capsys)
    one_error_line(code, err, "model.safetensors", "checkpoint is damaged")


def _to_old_layout(run_dir: Path) -> None:
    """The checkpoint as transferkit 0.1 wrote it: the files beside an unversioned state.json."""
    ck = run_dir / "checkpoint"
    st = json.loads((ck / "state.json").read_text())
    for p in (ck / st["folder"]).iterdir():
        p.rename(ck / p.name)
    (ck / st["folder"]).rmdir()
    for key in ("format", "folder", "files"):
        st.pop(key)
    (ck / "state.json").write_text(json.dumps(st))


def test_a_checkpoint_of_the_old_layout_still_resumes(finished, tmp_path, capsys, monkeypatch):
    root, data = finished
    with monkeypatch.context() as m:
        interrupt_after(m, 1)  # the head stage done, fine-tuning not begun
        code, _, err = run(["fit", data, *SETTINGS, "--out", tmp_path / "cut"], capsys)
    assert code == 130, err
    _to_old_layout(tmp_path / "cut")
    code, _, err = run(["fit", "--resume", tmp_path / "cut"], capsys)
    assert code == 0, err
    assert same_tensors(tmp_path / "cut" / "bundle" / "model.safetensors",
                        root / "done" / "bundle" / "model.safetensors")
    # the next save replaced the old layout by the new one
    st = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert st["format"] == FORMAT
    assert not (tmp_path / "cut" / "checkpoint" / "model.safetensors").exists()


def test_a_checkpoint_of_another_model_is_refused(finished, tmp_path, capsys):
    run_dir = copy_run(finished, tmp_path)
    rc = json.loads((run_dir / "run_config.json").read_text())
    rc["head"]["kind"], rc["head"]["hidden"] = "mlp", 7
    (run_dir / "run_config.json").write_text(json.dumps(rc))
    code, _, err = run(["fit", "--resume", run_dir, "-q"], capsys)
    one_error_line(code, err, "state.json", "belongs to another run")


# ----------------------------------------------------------------------------- run folders

def test_out_naming_a_file_is_refused(finished, tmp_path, capsys):
    _, data = finished
    (tmp_path / "afile").write_text("mine")
    code, _, err = run(["fit", data, *SETTINGS, "--out", tmp_path / "afile"], capsys)
    one_error_line(code, err, "--out", "afile", "not a folder")
    code, _, err = run(["fit", data, *SETTINGS, "--out", tmp_path / "afile" / "run"], capsys)
    one_error_line(code, err, "--out", "afile", "not a folder")
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_existing_run_is_not_overwritten(finished, tmp_path, capsys):
    _, data = finished
    run_dir = copy_run(finished, tmp_path)
    before = digest(run_dir)
    code, _, err = run(["fit", data, *SETTINGS, "--epochs", "3", "--out", run_dir], capsys)
    one_error_line(code, err, str(run_dir), "already holds a run", "--resume", "--overwrite")
    assert digest(run_dir) == before


@pytest.mark.parametrize("fault", ["missing data", "bad data", "bad weights", "epochs 0"])
def test_a_fit_that_fails_on_its_inputs_leaves_the_run_alone(finished, tmp_path, capsys,
                                                              fault):
    _, data = finished
    run_dir = copy_run(finished, tmp_path)
    before = digest(run_dir)
    args = ["fit", data, *SETTINGS, "--out", run_dir, "--overwrite"]
    if fault == "missing data":
        args[1] = tmp_path / "nope"
    elif fault == "bad data":
        (tmp_path / "bad.csv").write_text("text,label\nonly one row,a\n")
        args[1] = tmp_path / "bad.csv"
    elif fault == "bad weights":
        (tmp_path / "w.safetensors").write_bytes(b"not tensors")
        args[3] = "timm:resnet18"
        args += ["--weights", tmp_path / "w.safetensors"]
    else:
        args = ["fit", data, *FREEZE, "--epochs", "0", "--out", run_dir, "--overwrite"]
    code, _, err = run(args, capsys)
    one_error_line(code, err, "epochs 0" if fault == "epochs 0" else "")
    assert digest(run_dir) == before
    # and --resume still finishes the run with its own settings
    assert json.loads((run_dir / "run_config.json").read_text())["train"]["epochs"] == 1


def test_overwrite_replaces_the_run_and_nothing_else(finished, tmp_path, capsys):
    _, data = finished
    run_dir = copy_run(finished, tmp_path)
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "checkpoint" / "stray").mkdir()
    code, _, err = run(["fit", data, *FREEZE, "--epochs", "2", "--out", run_dir,
                        "--overwrite"], capsys)
    assert code == 0, err
    rc = json.loads((run_dir / "run_config.json").read_text())
    assert rc["strategy"]["name"] == "freeze" and rc["run"]["overwrite"] is False
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 2
    assert not (run_dir / "checkpoint" / "stray").exists()
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_an_empty_or_unrelated_folder_is_used(finished, tmp_path, capsys):
    _, data = finished
    (tmp_path / "empty").mkdir()
    code, _, err = run(["fit", data, *SETTINGS, "--out", tmp_path / "empty"], capsys)
    assert code == 0, err
    assert (tmp_path / "empty" / "bundle" / "model.safetensors").exists()


@pytest.mark.parametrize("extra,needle", [(["--overwrite"], "--overwrite"),
                                          (["--epochs", "3"], "--epochs"),
                                          (["--config", "x.yaml"], "--config")])
def test_resume_takes_no_other_settings(finished, tmp_path, capsys, extra, needle):
    run_dir = copy_run(finished, tmp_path)
    before = digest(run_dir)
    code, _, err = run(["fit", "--resume", run_dir, *extra], capsys)
    one_error_line(code, err, "--resume", needle)
    assert digest(run_dir) == before


def test_resume_of_no_run(tmp_path, capsys):
    code, _, err = run(["fit", "--resume", tmp_path / "nope"], capsys)
    one_error_line(code, err, "nope", "run_config.json")
    (tmp_path / "afile").write_text("x")
    code, _, err = run(["fit", "--resume", tmp_path / "afile"], capsys)
    one_error_line(code, err, "afile")


# ----------------------------------------------------------------------------- epochs 0

def test_epochs_0_is_refused_when_nothing_would_train(finished, tmp_path, capsys):
    _, data = finished
    code, _, err = run(["fit", data, *FREEZE, "--epochs", "0", "--out", tmp_path / "r"],
                       capsys)
    one_error_line(code, err, "--epochs 0", "freeze", "train nothing")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("strategy,options", [("linear", []), ("finetune", ["-o", "head_epochs=1"])])
def test_epochs_0_runs_when_a_stage_still_trains(finished, tmp_path, capsys, strategy, options):
    _, data = finished
    code, _, err = run(["fit", data, "--backbone", "tiny-cnn", "--strategy", strategy, *options,
                        "--epochs", "0", "--workers", "0", "-q", "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["val"]["n"] > 0


# ----------------------------------------------------------------------------- the command line

def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path, capsys):
    from transferkit.errors import DataError

    for argv in (["--debug", "fit", tmp_path / "nope"], ["fit", tmp_path / "nope", "--debug"]):
        with pytest.raises(DataError, match="nope"):
            main([str(a) for a in argv])
    code, _, err = run(["fit", tmp_path / "nope"], capsys)
    one_error_line(code, err, "nope")


def test_quiet_before_the_command(finished, tmp_path, capsys):
    _, data = finished
    code, out, err = run(["fit", data, *FREEZE[:-1], "--out", tmp_path / "loud"], capsys)
    assert code == 0, err
    assert "run folder" in out + err
    code, out, err = run(["-q", "fit", data, *FREEZE[:-1], "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    assert "run folder" not in out + err


def test_sigterm_and_ctrl_c_exit_codes(finished, tmp_path, capsys, monkeypatch):
    from transferkit.engine import trainer as trainer_mod
    from transferkit.errors import Terminated

    _, data = finished
    for exc, expected in ((Terminated, 143), (KeyboardInterrupt, 130)):
        def stop(*a, **k):
            raise exc
        with monkeypatch.context() as m:
            m.setattr(trainer_mod.Trainer, "_train_batches", stop)
            out = tmp_path / expected.__str__()
            code, _, err = run(["fit", data, *SETTINGS, "--out", out], capsys)
        assert code == expected, err
        assert f"resume with: transferkit fit --resume {out}" in err and "Traceback" not in err


def test_an_internal_error_says_where_to_report_it(finished, tmp_path, capsys, monkeypatch):
    from transferkit.engine import trainer as trainer_mod

    _, data = finished

    def broken(*a, **k):
        raise RuntimeError("an internal fault")
    monkeypatch.setattr(trainer_mod.Trainer, "_train_batches", broken)
    code, _, err = run(["fit", data, *SETTINGS, "--out", tmp_path / "r"], capsys)
    line = one_error_line(code, err, "RuntimeError", "an internal fault", "report",
                          "--debug", exit_code=1)
    assert "issue tracker" in line


def test_a_file_the_system_refuses_is_named(finished, tmp_path, capsys, monkeypatch):
    import errno

    from transferkit.engine import checkpoint as ck

    _, data = finished

    def full(folder, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "state.json"))
    monkeypatch.setattr(ck, "write_checkpoint", full)
    monkeypatch.setattr("transferkit.engine.callbacks.write_checkpoint", full)
    code, _, err = run(["fit", data, *SETTINGS, "--out", tmp_path / "r"], capsys)
    one_error_line(code, err, str(tmp_path / "r" / "checkpoint" / "state.json"),
                   "No space left on device")
