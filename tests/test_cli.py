"""The command line: fit / evaluate / predict / list, and every bad-input case."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from transferkit.cli import main

from conftest import make_image_folder, make_text_csv

REPO = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ----------------------------------------------------------------------------- happy path

def test_fit_predict_evaluate_image(image_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run(["fit", image_folder, "--backbone", "tiny-cnn", "--strategy", "freeze",
                          "--epochs", "2", "--out", run_dir, "--seed", "1"], capsys)
    assert code == 0, err
    assert "val accuracy" in err and "bundle:" in err
    assert "trainable" in err
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["strategy"] == "freeze"

    code, out, err = run(["predict", run_dir / "bundle", image_folder / "cat" / "cat_000.png",
                          "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0]["label"] in ("cat", "dog") and 0 <= rows[0]["probability"] <= 1

    code, out, err = run(["predict", run_dir / "bundle", image_folder / "dog"], capsys)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 10

    code, out, err = run(["evaluate", run_dir / "bundle", image_folder, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n"] == 20


def test_fit_text_and_predict_texts(text_csv, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run(["fit", text_csv, "--backbone", "tiny-bert", "--strategy", "linear",
                        "--out", run_dir], capsys)
    assert code == 0, err
    code, out, err = run(["predict", run_dir / "bundle", "--text", "great good love",
                          "awful bad hate"], capsys)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 2
    # a table of texts: one prediction per row, labels ignored
    code, out, err = run(["predict", run_dir / "bundle", text_csv], capsys)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 32
    assert "line 2" in out.splitlines()[0]


def test_config_file(image_folder, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('backbone = "tiny-cnn"\nepochs = 1\nstrategy = "partial"\n[options]\nlayers = 1\n'
                   'head_epochs = 1\n')
    code, _, err = run(["fit", image_folder, "--config", cfg, "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["strategy"] == "partial" and m["strategy_options"]["layers"] == 1


def test_list(capsys):
    code, out, _ = run(["list", "backbones"], capsys)
    assert code == 0
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "minilm",
                 "wordllama", "timm:<name>", "hf:<name>"):
        assert name in out
    assert "tiny-cnn" not in out
    code, out, _ = run(["list", "strategies"], capsys)
    for name in ("linear", "freeze", "partial", "finetune"):
        assert name in out
    assert any(line.startswith("auto ") and "(the default)" in line for line in out.splitlines())


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "transferkit fit" in out


# ----------------------------------------------------------------------------- bad input

@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "imgs", per_class=8)


def _fit(data, tmp_path, *extra):
    return ["fit", data, "--backbone", "tiny-cnn", "--epochs", "1", "--out", tmp_path / "run", *extra]


def test_truncated_image(folder, tmp_path, capsys):
    bad = folder / "cat" / "broken.jpg"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(bad, quality=95)
    bad.write_bytes(bad.read_bytes()[:300])
    code, _, err = run(_fit(folder, tmp_path), capsys)
    assert_one_line_error(code, err, "broken.jpg")


def test_text_file_named_jpg(folder, tmp_path, capsys):
    (folder / "dog" / "notes.jpg").write_text("this is not an image\n")
    code, _, err = run(_fit(folder, tmp_path), capsys)
    assert_one_line_error(code, err, "notes.jpg", "not a readable image")


def test_skip_bad_lists_what_it_skipped(folder, tmp_path, capsys):
    (folder / "dog" / "notes.jpg").write_text("this is not an image\n")
    bad = folder / "cat" / "broken.jpg"
    Image.new("RGB", (64, 64)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])
    code, _, err = run(_fit(folder, tmp_path, "--skip-bad"), capsys)
    assert code == 0, err
    assert "skipped" in err and "notes.jpg" in err and "broken.jpg" in err


def test_empty_class_folder(folder, tmp_path, capsys):
    (folder / "bird").mkdir()
    code, _, err = run(_fit(folder, tmp_path), capsys)
    assert_one_line_error(code, err, "bird")


def test_single_class(tmp_path, capsys):
    data = make_image_folder(tmp_path / "one", per_class=6, classes=("only",))
    code, _, err = run(_fit(data, tmp_path), capsys)
    assert_one_line_error(code, err, "1 class")


def test_decompression_bomb(folder, tmp_path, capsys, monkeypatch):
    import PIL.Image

    Image.new("L", (400, 400)).save(folder / "cat" / "huge.png")
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 10_000)
    code, _, err = run(_fit(folder, tmp_path), capsys)
    assert_one_line_error(code, err, "huge.png", "decompression")


def test_ragged_csv(tmp_path, capsys):
    p = make_text_csv(tmp_path / "t.csv")
    with open(p, "a", encoding="utf-8") as f:
        f.write("one,two,three\n")
    code, _, err = run(["fit", p, "--backbone", "tiny-bert", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "t.csv", "line 34")


def test_csv_missing_value(tmp_path, capsys):
    p = make_text_csv(tmp_path / "t.csv")
    with open(p, "a", encoding="utf-8") as f:
        f.write("some text,\n")
    code, _, err = run(["fit", p, "--backbone", "tiny-bert", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "t.csv", "line 34")


def test_csv_non_utf8(tmp_path, capsys):
    p = make_text_csv(tmp_path / "t.csv")
    with open(p, "ab") as f:
        f.write(b"caf\xe9 au lait,pos\n")
    code, _, err = run(["fit", p, "--backbone", "tiny-bert", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "t.csv", "line 34", "UTF-8")


def test_unknown_label_at_evaluate(text_csv, tmp_path, capsys):
    code, _, err = run(["fit", text_csv, "--backbone", "tiny-bert", "--epochs", "1",
                        "--out", tmp_path / "r"], capsys)
    assert code == 0, err
    other = tmp_path / "other.csv"
    other.write_text("text,label\ngood stuff,pos\nmeh,neutral\n")
    code, _, err = run(["evaluate", tmp_path / "r" / "bundle", other], capsys)
    assert_one_line_error(code, err, "other.csv", "neutral")


def test_unknown_backbone(folder, tmp_path, capsys):
    code, _, err = run(["fit", folder, "--backbone", "resnet9000", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "resnet9000")


@pytest.mark.parametrize("name", ["timm:resnet18", "hf:bert-base-uncased"])
def test_hub_name_offline_fails_fast(folder, text_csv, tmp_path, capsys, name):
    data = folder if name.startswith("timm") else text_csv
    t0 = time.perf_counter()
    code, _, err = run(["fit", data, "--backbone", name, "--out", tmp_path / "r"], capsys)
    assert time.perf_counter() - t0 < 20
    assert_one_line_error(code, err, name)


def test_modality_mismatch(text_csv, tmp_path, capsys):
    code, _, err = run(["fit", text_csv, "--backbone", "tiny-cnn", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "tiny-cnn")


def test_missing_data_path(tmp_path, capsys):
    code, _, err = run(["fit", tmp_path / "nope", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "nope")


def test_bad_bundle(tmp_path, capsys):
    code, _, err = run(["predict", tmp_path, "x.jpg"], capsys)
    assert_one_line_error(code, err, "config.json")


def test_bad_flag_value(folder, tmp_path, capsys):
    code, _, err = run(_fit(folder, tmp_path, "--batch-size", "0"), capsys)
    assert_one_line_error(code, err, "--batch-size")


# ----------------------------------------------------------------------------- processes

def _env():
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_real_process_error_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "transferkit", "fit", str(tmp_path / "missing"),
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, env=_env(),
                       timeout=120)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("error:") and "missing" in p.stderr


def test_sigterm_keeps_the_checkpoint(tmp_path):
    data = make_image_folder(tmp_path / "imgs", per_class=30)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "transferkit", "fit", str(data), "--backbone", "tiny-cnn",
           "--strategy", "finetune", "--epochs", "400", "--out", str(run_dir), "--seed", "0",
           "-o", "head_epochs=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    state = run_dir / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["stage"] >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "resume" in err and "Traceback" not in err
    st = json.loads(state.read_text())
    assert st["epoch"] >= 1
    assert not (run_dir / "metrics.json").exists()


def test_explain_command(image_folder, tmp_path, capsys):
    code, _, err = run(["fit", image_folder, "--backbone", "tiny-cnn", "--epochs", "1",
                        "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    code, out, err = run(["explain", tmp_path / "run" / "bundle", image_folder / "cat" / "cat_000.png",
                          "--out", tmp_path / "ex"], capsys)
    assert code == 0, err
    assert (tmp_path / "ex" / "explain.html").exists()
    code, _, err = run(["explain", tmp_path / "run" / "bundle", tmp_path / "nope.png"], capsys)
    assert_one_line_error(code, err, "nope.png")



def test_a_closed_pipe_ends_quietly(tmp_path, monkeypatch, capfd):
    """`transferkit predict ... | head`: the reader going away is no internal error."""
    import sys

    from transferkit import cli

    def cut(a):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_list", cut)
    with open(tmp_path / "out", "w") as f:
        monkeypatch.setattr(sys, "stdout", f)
        assert cli.main(["list", "backbones"]) == 141
    assert "error" not in capfd.readouterr().err
