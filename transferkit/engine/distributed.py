"""Data-parallel training through Hugging Face Accelerate.

``transferkit fit ... --processes N`` (or ``accelerate launch -m transferkit fit ...``) runs N
copies of the same fit.  Every process builds the same model from the same seed and walks the
same global batch order; each takes its share of every batch (``batch[rank::N]``), and after
the backward pass the gradients of the stage's trainable tensors are averaged over all
processes, weighted by their share sizes, with Accelerate's ``reduce`` (gloo on CPUs, NCCL on
GPUs).  So every optimizer step is the step one process would take on the whole batch (up to
floating-point summation order, dropout masks, and batch statistics of layers that compute
them).  The averaging is done explicitly, not by wrapping the model in
``DistributedDataParallel``, because stages change which tensors train and stages on cached
features never call the model's forward.

Validation, selection and the final evaluation run in every process on the whole split (the
weights are the same everywhere, so every process makes the same choice); only the main
process writes the feature cache, checkpoints, history, the bundle and the report.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from ..errors import ConfigError, TransferkitError


def launched_world_size() -> int:
    """How many processes the launcher (``accelerate launch`` / ``torchrun``) started."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launch_processes(n: int, argv: list[str]) -> bool:
    """Run ``transferkit <argv>`` as ``n`` processes through ``accelerate launch`` and wait
    for them; ``False`` (nothing launched) when ``n`` is 1 or this process was itself
    started by a launcher."""
    if n <= 1 or launched_world_size() > 1:
        return False
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(n), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "transferkit", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise LaunchError(f"--processes {n}: a training process failed (exit code "
                          f"{done.returncode}); its message is above", done.returncode)
    return True


class LaunchError(TransferkitError):
    """A process of a data-parallel run failed; it printed its own message."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = 2 if code == 2 else 1


class Processes:
    """This process's place in a data-parallel run (one process: rank 0 of 1)."""

    def __init__(self, device: str = "cpu"):
        self.accelerator = None
        self.rank, self.world = 0, 1
        if launched_world_size() > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=(device == "cpu"))
            self.rank = self.accelerator.process_index
            self.world = self.accelerator.num_processes

    def describe(self) -> str:
        if self.accelerator is None:
            return "one process"
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "?"
        return f"{backend} on {self.accelerator.device}"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        return self.accelerator.device if self.accelerator is not None else None

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < self.world:
            raise ConfigError(f"--batch-size {batch_size} is smaller than the number of "
                              f"processes ({self.world}): every process needs a share")

    def share(self, indices: torch.Tensor) -> torch.Tensor:
        """This process's share of one global batch of sample indices."""
        return indices[self.rank::self.world] if self.world > 1 else indices

    def average_gradients(self, params, n_local: int) -> None:
        """Replace each gradient by the share-size-weighted mean over all processes (the
        gradient of the mean loss over the whole global batch)."""
        if self.world == 1:
            return
        params = [p for p in params if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in params] + [torch.ones(1, device=params[0].device)])
        flat = self.accelerator.reduce(flat * float(n_local), reduction="sum")
        total = float(flat[-1])
        offset = 0
        for p in params:
            n = p.numel()
            g = (flat[offset:offset + n] / max(total, 1e-12)).view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            offset += n

    def sum(self, *values: float) -> list[float]:
        """The sums of ``values`` over all processes."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def broadcast(self, value: str) -> str:
        """The main process's ``value`` (e.g. a run folder named after the clock)."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
