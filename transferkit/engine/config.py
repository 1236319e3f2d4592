"""Training settings shared by every strategy (a versioned, strict dataclass)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

OPTIMIZERS = ("adamw", "sgd", "adam")
SCHEDULES = ("cosine", "constant", "linear")
#: the label-free criterion used when adapting to a target domain (see engine/domain.py)
DEFAULT_DOMAIN_SELECTION = "dev"


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    patience: int | None = None
    label_smoothing: float = 0.0
    max_grad_norm: float | None = None
    seed: int = 0
    augment: bool = False
    grayscale: bool = False
    skip_bad: bool = False
    workers: int | None = None
    device: str = "cpu"
    #: how the epoch to keep is chosen when adapting to an unlabelled target domain:
    #: "auto" (= DEFAULT_DOMAIN_SELECTION), "source-val", "iwv", "dev" or "entropy"; runs
    #: without a target always choose on source validation accuracy
    select: str = "auto"

    def validate(self) -> "TrainConfig":
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be >= 0, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be >= 1, got {self.patience}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.device not in ("cpu", "cuda", "auto", "mps") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}")
        from .domain import CRITERIA

        if self.select not in ("auto",) + CRITERIA:
            raise ConfigError(f"unknown selection criterion {self.select!r}; choose auto, "
                              + ", ".join(CRITERIA))
        return self

    def selection(self, has_target: bool) -> str:
        if not has_target:
            return "source-val"
        return DEFAULT_DOMAIN_SELECTION if self.select == "auto" else self.select

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
        return cls(**d).validate()


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)
