"""Bundles written by transferkit 0.1.0 (``tests/fixtures/legacy_bundles``) still load and
give the logits that were stored beside them when they were written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import transferkit

ROOT = Path(__file__).resolve().parent / "fixtures" / "legacy_bundles"
CASES = sorted(p.name for p in ROOT.iterdir() if (p / "config.json").exists())


def _inputs(modality: str) -> list:
    if modality == "image":
        return [str(p) for p in sorted((ROOT / "inputs").glob("*.png"))]
    return json.loads((ROOT / "inputs" / "texts.json").read_text())


def test_fixtures_present():
    assert len(CASES) >= 10


@pytest.mark.parametrize("name", CASES)
def test_legacy_bundle_gives_the_same_logits(name):
    tm = transferkit.load(ROOT / name)
    expected = load_file(str(ROOT / f"{name}.logits.safetensors"))["logits"]
    got = torch.from_numpy(tm.logits(_inputs(tm.modality)))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
