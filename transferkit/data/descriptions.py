"""Class names and class descriptions for zero-shot classification.

``--classes a,b,c`` names the classes; ``--descriptions FILE`` is a JSON object mapping each
class name to a description or a list of them.  A description may be a template: ``{label}``
is replaced by the class name (``"This review is {label}."``).  A class without a
description is described by its name (``_`` and ``-`` read as spaces).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, DataError

LABEL = "{label}"


def parse_class_names(text: str, where: str = "--classes") -> list[str]:
    """``"ant,bee"`` -> ``["ant", "bee"]``; empty or duplicate names are refused."""
    names = [n.strip() for n in str(text).split(",")]
    if any(not n for n in names):
        raise ConfigError(f"{where} {text!r}: a class name is empty")
    return _distinct(names, where)


def _distinct(names: list[str], where: str) -> list[str]:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{where}: class {n!r} is named twice")
        seen.add(n)
    if len(names) < 2:
        raise ConfigError(f"{where}: name at least two classes (got {len(names)})")
    return names


def plain_name(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def read_descriptions(path: str | Path) -> dict[str, list[str]]:
    """The descriptions file as ``{class: [description, ...]}`` (templates not yet filled)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--descriptions {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{path}: not a readable JSON file ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: expected a JSON object mapping each class to a description")
    out: dict[str, list[str]] = {}
    for label, value in raw.items():
        texts = [value] if isinstance(value, str) else value
        if not label.strip():
            raise DataError(f"{path}: a class name is empty")
        if not isinstance(texts, list) or not texts or not all(
                isinstance(t, str) and t.strip() for t in texts):
            raise DataError(f"{path}: class {label!r}: give a description or a list of "
                            "non-empty descriptions")
        out[label] = texts
    return out


def class_texts(classes: list[str] | None, descriptions: str | Path | None) -> dict[str, list[str]]:
    """``{class: [text, ...]}`` in class order, templates filled.  ``classes``: the classes
    (from the data or ``--classes``); ``None`` takes them from the descriptions file.  A file
    that misses a class or names an unknown one is refused."""
    given = read_descriptions(descriptions) if descriptions is not None else None
    if classes is None:
        if given is None:
            raise ConfigError("zero-shot needs classes: DATA, --classes a,b,c or "
                              "--descriptions FILE")
        classes = _distinct(list(given), str(descriptions))
    if given is not None:
        missing = [c for c in classes if c not in given]
        unknown = [c for c in given if c not in classes]
        if missing:
            raise DataError(f"{descriptions}: no description for class {missing[0]!r} "
                            f"(classes: {', '.join(classes)})")
        if unknown:
            raise DataError(f"{descriptions}: describes {unknown[0]!r}, which is not a class "
                            f"(classes: {', '.join(classes)})")
    return {c: [t.replace(LABEL, plain_name(c)) for t in (given or {}).get(c, [LABEL])]
            for c in classes}
