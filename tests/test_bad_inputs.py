"""The bad-input corpus (``tests/bad_inputs/corpus.py``), one test per case, each run through
the real command line in-process: bad input gives exit code 2 and one ``error:`` line naming
the file, line or option and the fault, with no traceback; odd but valid input works."""

from __future__ import annotations

import warnings

import pytest

from transferkit.cli import main

from bad_inputs.corpus import CASES, Context, make_bundles, make_hf_folder


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return make_bundles(tmp_path_factory.mktemp("bundles"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch, bundles):
    ctx = Context(tmp_path, bundles["image"], bundles["text"], lambda: make_hf_folder(tmp_path / "hf"))
    case = CASES[name](ctx)
    if case.setup is not None:
        case.setup(monkeypatch)
    capsys.readouterr()  # what building the case printed
    with warnings.catch_warnings(record=True) as caught:  # a warning would reach the user
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        code = main([str(arg) for arg in case.argv])
    out, err = capsys.readouterr()
    assert not [w for w in caught if case.code], [str(w.message)[:200] for w in caught]
    assert code == case.code, err
    assert "Traceback" not in err
    if case.code:
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
        for needle in case.names:
            assert needle in lines[0], (needle, lines[0])
    for needle in case.never:
        assert needle not in err, (needle, err)
    if case.check is not None:
        case.check(out, err)


def test_corpus_is_large_enough():
    assert len(CASES) >= 60
