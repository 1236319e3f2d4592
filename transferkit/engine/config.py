"""Training settings shared by every strategy (a section of the run's configuration).

Every field is declared once, with its type, default, one-line help and command-line
spelling (:func:`~transferkit.settings.setting`); the ``fit`` command's flags, config files,
``run_config.json`` and the Python API all derive from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ConfigError
from ..settings import Settings, setting
from .budget import parse_duration
from .domain import CRITERIA

OPTIMIZERS = ("adamw", "adam", "sgd")
TASK_SAMPLING = ("proportional", "temperature", "equal")
SCHEDULES = ("cosine", "constant", "linear")
DEVICES = ("cpu", "cuda", "auto", "mps")
#: the label-free criterion used when adapting to a target domain (see engine/domain.py)
DEFAULT_DOMAIN_SELECTION = "dev"
#: early stopping when no --patience is given (benchmarks/results/early_stopping.md)
DEFAULT_PATIENCE = 3


@dataclass
class TrainConfig(Settings):
    section: ClassVar[str] = "train"

    epochs: int = setting(10, "training epochs (of the last stage)")
    lr: float | None = setting(None, "learning rate (head for freeze; top backbone group for "
                               "finetune/partial); default: the strategy's")
    batch_size: int = setting(32, "training batch size")
    eval_batch_size: int = setting(64, "batch size for evaluation and feature extraction")
    optimizer: str = setting("adamw", "optimizer", choices=OPTIMIZERS)
    weight_decay: float = setting(1e-4, "weight decay")
    momentum: float = setting(0.9, "momentum (sgd)")
    schedule: str = setting("cosine", "learning-rate schedule", choices=SCHEDULES)
    warmup_epochs: float = setting(0.0, "warm-up epochs", flag="--warmup")
    patience: int | None = setting(None, "early stopping after N epochs of a stage without "
                                   "validation improvement; 0: off; default: "
                                   f"{DEFAULT_PATIENCE} when choosing on labelled validation, "
                                   "off with label-free domain selection", metavar="N")
    budget: str | None = setting(None, "time budget of the fit (600, 90s, 10m, 1.5h): no epoch "
                                 "starts that would end past it (the first always runs); "
                                 "the best epoch so far is kept", metavar="TIME")
    label_smoothing: float = setting(0.0, "label smoothing of the classification loss, in [0, 1)")
    max_grad_norm: float | None = setting(None, "clip the gradient norm to this value")
    seed: int = setting(0, "seed of splits, initialisation and batch order")
    augment: bool = setting(False, "random resized crop, flip, rotation (backbone re-run "
                            "every epoch); detection: horizontal flip, boxes with it")
    grayscale: bool = setting(False, "convert images to one channel, fed as three")
    skip_bad: bool = setting(False, "skip unreadable images and list them")
    workers: int | None = setting(None, "image decoding worker processes")
    device: str = setting("cpu", "cpu, cuda, cuda:N, mps or auto")
    processes: int = setting(1, "data-parallel training processes, through Accelerate (gloo "
                             "on CPUs, NCCL on GPUs); the main one writes the run", metavar="N")
    #: how the epoch to keep is chosen when adapting to an unlabelled target domain:
    #: "auto" (= DEFAULT_DOMAIN_SELECTION); runs without a target always choose on source
    #: validation accuracy
    select: str = setting("auto", "label-free criterion choosing the epoch of a domain-"
                          "adaptation run (auto = dev)", choices=("auto",) + CRITERIA)
    task_weight: dict[str, Any] = setting(factory=dict, help="several tasks: the loss weight of "
                                          "task NAME (default 1)", metavar="NAME=W")
    task_sampling: str = setting("proportional", "several tasks: each task's share of the "
                                 "training signal: proportional to its size, by temperature "
                                 "(n ** 1/T), or equal", choices=TASK_SAMPLING)
    task_temperature: float = setting(2.0, "the temperature T of --task-sampling temperature")

    def validate(self) -> "TrainConfig":
        if self.epochs < 0:
            raise ConfigError(f"--epochs must be >= 0, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"--eval-batch-size must be >= 1, got {self.eval_batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose {', '.join(SCHEDULES)}")
        if self.patience is not None and self.patience < 0:
            raise ConfigError(f"--patience must be >= 0 (0: no early stopping), got {self.patience}")
        if self.budget is not None:
            parse_duration(self.budget)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.processes < 1:
            raise ConfigError(f"--processes must be >= 1, got {self.processes}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}")
        if self.task_sampling not in TASK_SAMPLING:
            raise ConfigError(f"unknown task sampling {self.task_sampling!r}; choose "
                              + ", ".join(TASK_SAMPLING))
        if not self.task_temperature > 0:
            raise ConfigError(f"--task-temperature must be > 0, got {self.task_temperature}")
        self.task_weights()
        if self.select not in ("auto",) + CRITERIA:
            raise ConfigError(f"unknown selection criterion {self.select!r}; choose auto, "
                              + ", ".join(CRITERIA))
        return self

    def task_weights(self) -> dict[str, float]:
        """``--task-weight NAME=W`` as floats (each >= 0)."""
        out = {}
        for name, w in self.task_weight.items():
            try:
                out[str(name)] = float(w)
            except (TypeError, ValueError):
                raise ConfigError(f"--task-weight {name}={w}: the weight must be a number") from None
            if not out[str(name)] >= 0:
                raise ConfigError(f"--task-weight {name}={w}: the weight must be >= 0")
        return out

    @property
    def budget_seconds(self) -> float | None:
        return None if self.budget is None else parse_duration(self.budget)

    def early_stopping(self, criterion: str) -> int:
        """Epochs without improvement that end a stage (0: never), for the run's criterion."""
        if self.patience is not None:
            return self.patience
        return DEFAULT_PATIENCE if criterion == "source-val" else 0

    def selection(self, has_target: bool) -> str:
        if not has_target:
            return "source-val"
        return DEFAULT_DOMAIN_SELECTION if self.select == "auto" else self.select


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)
