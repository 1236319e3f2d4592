"""The eight paths of transfer: task (same / different) x domain (same / different) x order
(sequential / simultaneous), each with an example and the command that runs it.

A cell is *ready* when the setting or strategy its command needs is declared (looked up in
the run configuration's fields and the strategy registry), so the map follows the code
rather than a hand-kept list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import FLAT
from .strategies.base import list_strategies


def _has_strategy(name: str) -> Callable[[], bool]:
    return lambda: name in {s.name for s in list_strategies()}


def _has_setting(*names: str) -> Callable[[], bool]:
    return lambda: all(n in FLAT for n in names)


@dataclass(frozen=True)
class Path:
    order: str          # "sequential" (source first, then target) or "simultaneous"
    task: str           # "same" or "different" task (label space / output type)
    domain: str         # "same" or "different" input distribution
    name: str
    example: str
    command: str
    ready: Callable[[], bool]

    @property
    def status(self) -> str:
        return "ready" if self.ready() else "not yet (planned)"


PATHS: tuple[Path, ...] = (
    Path("sequential", "same", "same", "task fine-tuning",
         "an ImageNet classifier retrained to tell ants from bees",
         "transferkit fit photos/ --strategy finetune", _has_strategy("finetune")),
    Path("sequential", "same", "different", "domain adaptation",
         "digits learnt on MNIST, adapted to unlabelled USPS",
         "transferkit fit mnist.npz --target usps.npz --strategy dann",
         _has_strategy("dann")),
    Path("sequential", "different", "same", "task adaptation",
         "an ImageNet classifier turned into an object detector",
         "transferkit fit boxes/ --task detection --strategy freeze", _has_setting("task")),
    Path("sequential", "different", "different", "modality transfer",
         "an ImageNet CNN reused on spectrograms or grey digit scans",
         "transferkit fit spectrograms/ --backbone efficientnet_lite0 --strategy finetune",
         _has_strategy("finetune")),
    Path("simultaneous", "same", "same", "dataset merging",
         "the same classes collected from two sources, trained as one set",
         "transferkit fit setA/ setB/ --merge strict", _has_setting("merge")),
    Path("simultaneous", "same", "different", "weight sharing",
         "one sentiment model for product, restaurant and movie reviews",
         "transferkit fit amazon.tsv yelp.tsv imdb.tsv --domain-specific norm",
         _has_setting("domain_specific")),
    Path("simultaneous", "different", "same", "multi-task learning",
         "SST-2 polarity and SST-5 fine-grained sentiment of the same sentences",
         "transferkit fit --task sst2=sst2.tsv --task sst5=sst5.tsv --backbone minilm",
         _has_setting("task_weight")),
    Path("simultaneous", "different", "different", "parallel training",
         "review sentiment and TREC question types sharing one encoder",
         "transferkit fit --task reviews=uci.tsv --task trec=trec.tsv --backbone minilm",
         _has_setting("task_weight")),
)


def paths_table() -> str:
    """The map as an aligned text table, one path a line."""
    head = ("order", "task", "domain", "path", "example", "command", "status")
    rows = [head] + [(p.order, p.task, p.domain, p.name, p.example, p.command, p.status)
                     for p in PATHS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 3)]
    lines = []
    for r in rows:
        left = "  ".join(c.ljust(w) for c, w in zip(r[:4], widths))
        lines.append(f"{left}  {r[4]}\n{' ' * (sum(widths) + 8)}  $ {r[5]}   [{r[6]}]"
                     if r is not head else f"{left}  example / command   [status]")
    return "\n".join(lines)


def paths_record() -> list[dict[str, str]]:
    return [{"order": p.order, "task": p.task, "domain": p.domain, "path": p.name,
             "example": p.example, "command": p.command, "status": p.status} for p in PATHS]
