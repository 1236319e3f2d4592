"""The ImageNet-1k classes by name: WordNet lemmas (synonyms) and glosses, in head order.

Read from the files timm ships (``timm/data/_info/imagenet_synsets.txt``,
``imagenet_synset_to_lemma.txt``, ``imagenet_synset_to_definition.txt``), so the names need
no WordNet corpus and no network.  :func:`matching_classes` finds the ImageNet classes a
target class name stands for: the class whose lemmas include the name (``ant``: "ant,
emmet, pismire"), or, where none is named so, the kinds of it (``cat``: "tabby cat",
"Persian cat", ...; ``dog``: every breed of dog).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

from ..errors import BackboneError


@dataclass(frozen=True)
class SourceClass:
    """One class of a backbone's pretrained head: its names (first the usual one) and gloss."""

    names: tuple[str, ...]
    gloss: str


def _info_lines(name: str) -> list[str]:
    try:
        return (resources.files("timm") / "data" / "_info" / name).read_text(
            encoding="utf-8").splitlines()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as e:
        raise BackboneError(f"cannot read timm's ImageNet class names ({name}: {e})") from None


def _table(name: str) -> dict[str, str]:
    out = {}
    for line in _info_lines(name):
        key, _, value = line.partition("\t")
        out[key.strip()] = value.strip()
    return out


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[SourceClass, ...]:
    """The 1000 ImageNet-1k classes in the order of the pretrained heads' outputs."""
    synsets = [s.strip() for s in _info_lines("imagenet_synsets.txt") if s.strip()]
    lemmas, glosses = _table("imagenet_synset_to_lemma.txt"), _table(
        "imagenet_synset_to_definition.txt")
    return tuple(SourceClass(tuple(n.strip() for n in lemmas[s].split(",") if n.strip()),
                             glosses.get(s, "")) for s in synsets)


def normal_name(name: str) -> str:
    """Lower case, ``_`` and ``-`` as spaces, single spaces."""
    return " ".join(re.sub(r"[_\-]+", " ", name).lower().split())


def name_forms(name: str) -> list[str]:
    """The name and its singular forms (``bees`` -> ``bee``; ``puppies`` -> ``puppy``)."""
    n = normal_name(name)
    forms = [n]
    if n.endswith("ies") and len(n) > 4:
        forms.append(n[:-3] + "y")
    if n.endswith("es") and len(n) > 3:
        forms.append(n[:-2])
    if n.endswith("s") and not n.endswith("ss") and len(n) > 2:
        forms.append(n[:-1])
    return list(dict.fromkeys(forms))


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


_BREED = re.compile(r"breeds? of ([a-z' -]+?)(?= with | from | of | that | having | used | "
                    r"developed | originally | bred | noted | resembling | characterized |[,;(]|$)")


_LEAD = re.compile(r"(.+?)(?= with | from | of | that | having | used | developed | bred | "
                   r"noted | resembling | characterized | in |[,;(]|$)")


def _plural_forms(words: set[str]) -> set[str]:
    return words | {w + "s" for w in words} | {w + "es" for w in words}


def _genus(gloss: str) -> str:
    """The last word of the gloss's leading noun phrase ("a toy dog developed from ..." ->
    "dog"; "medium-sized breed with ..." -> "breed")."""
    m = _LEAD.match(gloss)
    words = re.findall(r"[a-z]+", m.group(1) if m else gloss)
    return words[-1] if words else ""


def _kind_of(c: SourceClass, heads: set[str]) -> bool:
    """Whether ``c`` is a kind of a thing named by one of ``heads``: a gloss whose leading
    noun is one ("a toy dog developed from ...") or that calls it a breed of one ("an old
    breed of tiny short-haired dog ..."), or a lemma whose last word is one while the gloss
    speaks of it or of a breed ("tabby cat": "a cat with ..."; "Irish terrier")."""
    gloss = c.gloss.lower()
    genus = _genus(gloss)
    if genus in heads:
        return True
    for phrase in _BREED.findall(gloss):
        words = re.findall(r"[a-z]+", phrase)
        if words and words[-1] in heads:
            return True
    named = set(re.findall(r"[a-z]+", gloss)) & heads or genus == "breed"
    return bool(named) and any(normal_name(n).split()[-1] in heads for n in c.names if n.strip())


def matching_classes(name: str, classes: tuple[SourceClass, ...] | None = None) -> list[int]:
    """Indices of the source classes ``name`` stands for: those with a lemma equal to the
    name (or its singular), else the kinds of it (lemma head or "breed of" gloss, grown to a
    closure so that "hound" and "terrier" breeds join "dog"); empty when none matches."""
    classes = imagenet_classes() if classes is None else classes
    forms = set(name_forms(name))
    direct = [i for i, c in enumerate(classes) if forms & {normal_name(n) for n in c.names}]
    if direct:
        return direct
    heads, found = _plural_forms(forms), set()
    while True:
        new = {i for i, c in enumerate(classes) if i not in found and _kind_of(c, heads)}
        if not new:
            return sorted(found)
        found |= new
        # kinds named as breeds name further kinds ("Afghan hound": then every hound)
        bred = [i for i in new if "breed" in classes[i].gloss.lower()]
        heads |= _plural_forms({normal_name(n).split()[-1] for i in bred for n in classes[i].names})
