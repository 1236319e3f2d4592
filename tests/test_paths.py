"""The eight-path map: every cell of task x domain x order once, its status read from the code."""

from __future__ import annotations

import itertools
import json

from transferkit import paths
from transferkit.cli import main


def test_every_cell_of_the_map_once():
    cells = {(p.order, p.task, p.domain) for p in paths.PATHS}
    assert cells == set(itertools.product(("sequential", "simultaneous"), ("same", "different"),
                                          ("same", "different")))
    assert len({p.name for p in paths.PATHS}) == 8


def test_status_follows_the_registry_and_the_settings(monkeypatch):
    by_name = {p.name: p for p in paths.PATHS}
    assert by_name["task fine-tuning"].status == "ready"
    assert by_name["domain adaptation"].status == "ready"
    assert all(p.status == "ready" for p in paths.PATHS)  # every cell has its command now
    monkeypatch.setattr(paths, "FLAT", {})
    assert by_name["dataset merging"].status.startswith("not yet")
    monkeypatch.setattr(paths, "FLAT", {"merge": ("data", "merge")})
    assert by_name["dataset merging"].status == "ready"


def test_paths_command_prints_table_and_json(capsys):
    assert main(["paths"]) == 0
    out = capsys.readouterr().out
    assert "weight sharing" in out and "$ transferkit fit" in out
    assert main(["paths", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record) == 8 and {"path", "command", "status"} <= set(record[0])
