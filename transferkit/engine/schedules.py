"""Learning-rate schedules, per optimizer step, from ``torch.optim.lr_scheduler``.

A linear warm-up over ``warmup`` steps from ``1 / warmup`` of each group's learning rate up to
all of it, then ``cosine`` (to 0 at the last step), ``linear`` (to 0) or ``constant``.
:func:`lr_factor` is the same schedule written out, the reference the tests hold the torch
schedulers to.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler,
                                      SequentialLR)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """The multiplier of every group's learning rate at optimizer step ``step``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - t)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(opt: Optimizer, total: int, warmup: int, schedule: str) -> LRScheduler:
    """A scheduler stepped once after every optimizer step; the learning rate of step ``s``
    is ``lr_factor(s, total, warmup, schedule)`` times the group's own."""
    decay_steps = total - warmup
    if schedule == "constant" or decay_steps <= 0:
        main: LRScheduler = ConstantLR(opt, factor=1.0, total_iters=0)
    elif schedule == "linear":
        main = LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=decay_steps)
    else:
        main = CosineAnnealingLR(opt, T_max=decay_steps, eta_min=0.0)
    if warmup <= 0:
        return main
    if warmup == 1:
        ramp: LRScheduler = ConstantLR(opt, factor=1.0, total_iters=0)
    else:
        ramp = LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return SequentialLR(opt, [ramp, main], milestones=[warmup])
