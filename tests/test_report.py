"""The run report: one self-contained page with the worst examples, the parameter summary,
the strategy's figures and the settings; checked in a real headless browser when one is
installed (a screenshot stays under build/test-artifacts/)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import transferkit
from transferkit.engine.metrics import classification_metrics, most_wrong

from browser import render, screenshot
from conftest import make_image_folder, make_text_csv


def _confusable_images(root):
    """Two classes drawn from the same distribution: the model must get some wrong."""
    make_image_folder(root, per_class=12, classes=("cat",), seed=1)
    make_image_folder(root, per_class=12, classes=("dog",), seed=2)
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = _confusable_images(root / "img")
    tm = transferkit.fit(data, backbone="tiny-vit", strategy="lora", epochs=1, batch_size=8,
                         seed=0, out=root / "run", quiet=True)
    return tm.run_dir


def _external_refs(page: str) -> list[str]:
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    return [r for r in refs if not r.startswith("data:")]


def test_most_wrong_orders_by_true_class_probability():
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    labels = np.array([1, 0, 1, 1])
    worst = most_wrong(proba, labels, 5)
    assert [w["index"] for w in worst] == [0, 3, 1]  # misclassified only, lowest p(true) first
    assert worst[0] == {"index": 0, "true": 1, "predicted": 0, "p_predicted": 0.9, "p_true": 0.1}
    m = classification_metrics(np.log(proba), labels, ["a", "b"], worst=1)
    assert [w["index"] for w in m["most_wrong"]] == [0]
    assert "most_wrong" not in classification_metrics(np.log(proba), labels, ["a", "b"])


def test_image_report_sections(image_run):
    page = (image_run / "report.html").read_text(encoding="utf-8")
    assert _external_refs(page) == []  # every figure inlined, nothing to fetch
    for heading in ("Trainable parameters", "Most wrong examples", "Strategy figures", "Settings"):
        assert f"<h2>{heading}</h2>" in page
    examples = page.split("<h2>Most wrong examples</h2>")[1].split("<h2>")[0]
    assert "data:image/png;base64," in examples  # thumbnails
    assert re.search(r"<td>(cat|dog)</td><td>(cat|dog)</td><td>0\.\d{3}</td>", examples)
    params = page.split("<h2>Trainable parameters</h2>")[1].split("<h2>")[0]
    assert "<td>backbone</td>" in params and "<td>head</td>" in params
    assert "what the model looks at" in page  # attention maps of a ViT's worst examples
    settings = page.split("<h2>Settings</h2>")[1]
    assert "&quot;strategy&quot;: {" in settings and "&quot;name&quot;: &quot;lora&quot;" in settings


def test_text_report_shows_the_sentences(tmp_path):
    data = make_text_csv(tmp_path / "t.csv", n_per_class=14)
    tm = transferkit.fit(data, backbone="tiny-bert", strategy="linear", out=tmp_path / "run",
                         seed=0, quiet=True)
    page = (tm.run_dir / "report.html").read_text(encoding="utf-8")
    wrong = tm.metrics  # the report lists what evaluation found wrong
    examples = page.split("<h2>Most wrong examples</h2>")[1].split("<h2>")[0]
    if (wrong["val"]["accuracy"] or 0) < 1 or (wrong["test"]["accuracy"] or 0) < 1:
        assert "&ldquo;this is" in examples
    assert "candidates (grid)" in page and "<th>C</th>" in page  # linear's C grid


def test_domain_report_has_tsne(tmp_path):
    data = make_image_folder(tmp_path / "img", per_class=10)
    tm = transferkit.fit(data, target=data, test=data, backbone="tiny-cnn", strategy="dann",
                         epochs=1, options={"source_epochs": 1}, out=tmp_path / "run", quiet=True)
    page = (tm.run_dir / "report.html").read_text(encoding="utf-8")
    section = page.split("<h2>Strategy figures</h2>")[1]
    assert "t-SNE" in section and "data:image/png;base64," in section


def test_report_in_a_real_browser(image_run):
    seen = render(image_run / "report.html")
    assert seen["fetched"] == []  # nothing requested: the page stands alone
    assert seen["images"] >= 5 and seen["broken"] == []
    assert {"Trainable parameters", "Most wrong examples", "Settings"} <= set(seen["headings"])
    shot = screenshot(image_run / "report.html", "report_run.png", height=min(seen["height"], 6000))
    assert shot.stat().st_size > 10_000


# ----------------------------------------------------------------------------- compare runs

def _cli(argv, capsys):
    from transferkit.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """Three strategies on the same text data, and one run on other data and labels."""
    root = tmp_path_factory.mktemp("compare")
    data = make_text_csv(root / "t.csv", n_per_class=14)
    runs = []
    for strategy in ("linear", "freeze", "lora"):
        tm = transferkit.fit(data, backbone="tiny-bert", strategy=strategy, epochs=2, seed=0,
                             out=root / strategy, quiet=True)
        runs.append(tm.run_dir)
    other = _confusable_images(root / "img")
    odd = transferkit.fit(other, backbone="tiny-cnn", strategy="freeze", epochs=1, seed=0,
                          out=root / "images", quiet=True)
    return runs, odd.run_dir


def test_compare_runs_on_the_same_data(three_runs, tmp_path, capsys):
    runs, _ = three_runs
    code, out, err = _cli(["report", *runs, "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    assert err == ""  # nothing to warn about
    page = (tmp_path / "cmp" / "index.html").read_text(encoding="utf-8")
    assert _external_refs(page) == []
    assert "Same data, same labels, same splits." in page and "class=warn" not in page
    import csv

    table = list(csv.DictReader(open(tmp_path / "cmp" / "runs.csv")))
    assert [r["strategy"] for r in table] == ["linear", "freeze", "lora"]
    for r, run in zip(table, runs):
        m = __import__("json").loads((run / "metrics.json").read_text())
        assert int(r["trainable_params"]) == m["trainable_params"]
        assert float(r["test_accuracy"]) == pytest.approx(m["test"]["accuracy"])
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 5_000


def test_compare_runs_of_different_data_says_so_at_the_top(three_runs, tmp_path, capsys):
    runs, odd = three_runs
    code, out, err = _cli(["report", runs[0], odd, "--out", tmp_path / "cmp"], capsys)
    assert code == 0
    assert "different tasks" in err and "different data" in err
    page = (tmp_path / "cmp" / "index.html").read_text(encoding="utf-8")
    top = page.split("<table>")[0]
    assert "different tasks" in top and "different data" in top and "class=warn" in top


def test_compare_bad_input_is_one_line_exit_2(three_runs, tmp_path, capsys):
    runs, _ = three_runs
    code, _, err = _cli(["report", runs[0], tmp_path / "missing", "--out", tmp_path / "c"], capsys)
    assert code == 2 and err.count("\n") == 1 and "missing: no such run folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _cli(["report", empty, "--out", tmp_path / "c"], capsys)
    assert code == 2 and "not a finished run (no metrics.json)" in err
    assert "Traceback" not in err


def test_compare_page_in_a_real_browser(three_runs, tmp_path):
    from transferkit.report.compare import compare_runs

    runs, _ = three_runs
    page = compare_runs(runs, tmp_path / "cmp")
    seen = render(page)
    assert seen["fetched"] == [] and seen["broken"] == [] and seen["images"] >= 4
    assert "Validation curves" in seen["headings"]
    screenshot(page, "report_compare.png", height=min(seen["height"], 4000))
