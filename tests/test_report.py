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
