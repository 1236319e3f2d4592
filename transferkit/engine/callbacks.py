"""The engine's own callbacks: timing, validation scores, best-epoch selection and early
stopping, the epoch log, progress bars, history and checkpoints.

The trainer assembles them in this order (``on_epoch_end`` runs them in turn, each reading
what the ones before it wrote into the epoch's record): :class:`Timing`,
:class:`ValidationScores`, the domain scores when there is a target domain,
:class:`BestEpoch`, :class:`EpochLog`, :class:`Progress`, :class:`History`,
:class:`Checkpoint`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import CheckpointError
from ..events import Callback
from ..io import write_text
from .checkpoint import read_checkpoint, write_checkpoint
from .domain import selection_key

HISTORY_COLUMNS = ["stage", "epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1",
                   "lr", "seconds"]
#: optional history columns, written when some epoch has them (and every ``term_<name>``:
#: the epoch's mean of the loss term ``<name>`` a callback added)
HISTORY_EXTRA = ["setting", "target_entropy", "dev_risk", "iw_val_accuracy",
                 "oracle_target_accuracy", "val_map50", "val_map"]


def better(key, best, min_delta: float = 1e-4) -> bool:
    """Higher first component wins; at an equal one, a second component higher by more than
    ``min_delta`` (validation accuracy, then validation loss lower by more than 1e-4)."""
    if best is None:
        return True
    if key[0] != best[0]:
        return key[0] > best[0]
    return key[1] > best[1] + min_delta


class Timing(Callback):
    """``train_s`` (time in the batches of every epoch), ``total_s``; the feature store adds
    ``features_s`` and validation ``eval_s`` to the same ``state.timing``."""

    def on_fit_start(self, state) -> None:
        self._t_fit = time.perf_counter()

    def on_epoch_start(self, state) -> None:
        self._t = time.perf_counter()

    def on_epoch_end(self, state, record) -> None:
        if state.stage.solve is None:  # the loop times a closed-form solve itself
            state.timing["train_s"] += time.perf_counter() - self._t

    def on_fit_end(self, state) -> None:
        state.timing["total_s"] = time.perf_counter() - self._t_fit
        state.timing["features_computed_s"] = state.trainer.cache.compute_s
        state.timing["onnx_export_s"] = state.trainer.cache.export_s


class ValidationScores(Callback):
    """Scores the validation split after every epoch (one pass: the representation and the
    logits are kept in ``state.val_outputs`` for the callbacks after this one)."""

    def on_epoch_end(self, state, record) -> None:
        t0 = time.perf_counter()
        z, logits = state.trainer.split_outputs("val", state.data["val"], state.cached)
        m = state.trainer.metrics(logits, state.data["val"].labels)
        state.val_outputs, state.val_metrics = (z, logits), m
        record.update(val_loss=m["loss"], val_accuracy=m["accuracy"], val_macro_f1=m["macro_f1"])
        state.timing["eval_s"] += time.perf_counter() - t0


class BestEpoch(Callback):
    """Keeps the weights of the best epoch under the run's selection criterion, stops a stage
    after ``patience`` epochs without improvement, and starts every stage (and ends the fit)
    from the best weights so far.  The settings of a closed-form stage compete among
    themselves only."""

    def on_stage_start(self, state) -> None:
        if state.stage.solve is not None:
            state.best = state.new_best()
        if not state.resumed_mid_stage:
            state.bad_epochs = 0

    def on_epoch_end(self, state, record) -> None:
        stage = state.stage
        key = selection_key(state.criterion, record)
        improved = stage.selectable and better(key, state.best.key)
        state.improved = improved
        if improved:
            state.best = state.new_best(key=key, epoch=record["epoch"], stage=stage.name,
                                        tensors=state.trainer.state_tensors(state.touched()),
                                        metrics=state.val_metrics, setting=record.get("setting"))
            state.bad_epochs = 0
        elif stage.selectable:
            state.bad_epochs += 1
        patience = state.cfg.early_stopping(state.criterion)
        if patience and state.bad_epochs >= patience and stage.solve is None:
            state.log(f"  early stop: no improvement of {state.criterion} in {patience} epochs")
            state.stop = True

    def on_stage_end(self, state) -> None:
        if state.best.tensors is not None:
            state.trainer.load_tensors(state.best.tensors)
        if not state.stage.frozen_backbone:
            state.trainer.features.backbone_changed()

    def on_fit_end(self, state) -> None:
        if state.best.tensors is not None:
            state.trainer.load_tensors(state.best.tensors)
        if state.solution is not None and len(state.candidates) > 1:
            state.solution["chosen"] = state.best.setting


class EpochLog(Callback):
    """One line per stage (what trains) and per epoch (losses, scores, ``*`` = kept)."""

    def on_stage_start(self, state) -> None:
        stage, model = state.stage, state.model
        trainable = sum(p.numel() for p in stage.parameters())
        total = sum(p.numel() for p in model.parameters())
        if stage.solve is not None:
            trainable = sum(p.numel() for n, p in model.named_parameters()
                            if n in set(state.touched()))
            what = "fitted in closed form on cached features"
        else:
            what = f"{stage.epochs} epochs"
            if not state.cached and stage.frozen_backbone and state.cfg.augment:
                what += " (backbone re-run every epoch: augmentation varies per epoch)"
        state.log(f"stage {stage.name}: trainable {trainable:,} / {total:,} "
                  f"({100 * trainable / max(total, 1):.1f}%), {what}")

    def on_epoch_end(self, state, record) -> None:
        if state.stage.solve is None:
            record["seconds"] = round(time.perf_counter() - state.epoch_started, 3)
        train_loss = record.get("train_loss")
        line = (f"  epoch {record['epoch']:3d} [{record['stage']}] "
                + (f"train loss {train_loss:.4f}  " if train_loss is not None else "")
                + "  ".join(f"{label} {record[key]:.4f}"
                            for key, label in state.trainer.epoch_scores))
        if "target_entropy" in record:
            line += f"  tgt entropy {record['target_entropy']:.3f}  dev {record['dev_risk']:.3f}"
        if record.get("oracle_target_accuracy") is not None:
            line += f"  (oracle tgt acc {record['oracle_target_accuracy']:.4f})"
        line += "  *" if state.improved else ""
        if record.get("setting") is not None:
            line += f"  [{record['setting']}]"
        state.log(line)


class Progress(Callback):
    """A progress bar over the batches of an epoch that runs the live backbone."""

    def __init__(self, progress):
        self.progress = progress
        self._task = None

    def on_epoch_start(self, state) -> None:
        if not state.cached and state.stage.solve is None:
            self._task = self.progress.add_task(f"train [{state.stage.name}]",
                                                total=state.steps_per_epoch)

    def on_batch(self, state, batch):
        if self._task is not None:
            self.progress.advance(self._task)
        return None

    def on_epoch_end(self, state, record) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None


class History(Callback):
    """``history.csv``: one row per epoch (and per closed-form setting)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "history.csv"

    def on_epoch_end(self, state, record) -> None:
        self.write(state.history)

    def on_fit_end(self, state) -> None:
        self.write(state.history)

    def write(self, history) -> None:
        terms = sorted({k for h in history for k in h if k.startswith("term_")})
        cols = HISTORY_COLUMNS + [c for c in HISTORY_EXTRA
                                  if any(h.get(c) is not None for h in history)] + terms
        lines = [",".join(cols)] + [",".join("" if h.get(c) is None else str(h.get(c))
                                             for c in cols) for h in history]
        write_text(self.path, "\n".join(lines) + "\n")


class Checkpoint(Callback):
    """After every epoch of SGD: the trained tensors, the best ones so far, the optimizer and
    scheduler state and the loop's position, written to ``RUN/checkpoint/`` as one complete
    checkpoint that replaces the previous one atomically (:mod:`.checkpoint`); with
    ``resume``, ``on_fit_start`` verifies that checkpoint and puts the loop back where it
    left off, so the run ends with the weights and figures an uninterrupted one would have."""

    def __init__(self, folder: Path, resume: bool, *, writer: bool = True):
        self.dir = Path(folder)
        self.resume = resume
        #: whether this process writes (in a data-parallel run only the main one does; every
        #: process reads a checkpoint to resume)
        self.writer = writer
        self._pending: dict | None = None

    # -------------------------------------------------------------- saving
    def on_epoch_end(self, state, record) -> None:
        if state.stage.solve is not None or not self.writer:
            return  # closed-form settings are cheap to refit: a resume solves the stage again
        b = state.best
        write_checkpoint(
            self.dir, state.trainer.state_tensors(state.touched()), b.tensors,
            state.optimizer.state_dict() if state.optimizer is not None else None,
            {"stage": state.stage_index,
             "epoch": state.stage.epochs if state.stop else state.epoch + 1,
             "bad_epochs": state.bad_epochs, "history": state.history,
             "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
             "best": {"key": list(b.key) if b.key else None, "epoch": b.epoch, "stage": b.stage,
                      "metrics": b.metrics}})

    # -------------------------------------------------------------- resuming
    def on_fit_start(self, state) -> None:
        # on the CPU: the optimizer's load_state_dict moves its state to each parameter's device
        ck = read_checkpoint(self.dir) if self.resume else None
        if ck is None:
            return
        pos, b = ck.position, ck.position["best"]
        stage, epoch = pos["stage"], pos["epoch"]
        if not 0 <= stage < len(state.stages) or epoch < 0:
            raise CheckpointError(f"{ck.manifest}: the checkpoint names stage {stage + 1}, "
                                  f"epoch {epoch} but the strategy has {len(state.stages)} "
                                  "stages; it belongs to another run")
        self._check_tensors(ck.manifest, state.model, ck.model, ck.best)
        state.trainer.load_tensors(ck.model)
        key = b.get("key")
        state.best = state.new_best(key=tuple(key) if key else None, epoch=b.get("epoch"),
                                    stage=b.get("stage"), metrics=b.get("metrics"),
                                    tensors=ck.best)
        state.history, state.bad_epochs = pos["history"], pos["bad_epochs"]
        if epoch >= state.stages[stage].epochs:
            # that stage had finished: start the next from the best weights, as a full run does
            if ck.best is not None:
                state.trainer.load_tensors(ck.best)
            stage, epoch = stage + 1, 0
        else:
            self._pending = {"scheduler": pos["scheduler"], "optimizer": ck.optimizer,
                             "manifest": ck.manifest}
            state.resumed_mid_stage = epoch > 0
        state.stage_index, state.epoch = stage, epoch
        if stage < len(state.stages):
            state.log(f"resuming at stage {state.stages[stage].name!r}, epoch {epoch + 1}")
        else:
            state.log("the run had finished training; writing its results again from its "
                      "checkpoint")

    @staticmethod
    def _check_tensors(manifest: Path, model, *tensor_sets) -> None:
        """Every tensor of the checkpoint names a tensor of this run's model, shape for shape."""
        sd = model.state_dict()
        for tensors in tensor_sets:
            for name, t in (tensors or {}).items():
                if name not in sd or tuple(sd[name].shape) != tuple(t.shape):
                    raise CheckpointError(f"{manifest}: the checkpoint's tensor {name!r} does "
                                          "not fit this run's model; it belongs to another run")

    def on_stage_start(self, state) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        if state.epoch == 0 or state.optimizer is None:
            return
        if pending["optimizer"] is None:
            raise CheckpointError(f"{pending['manifest']}: the checkpoint holds no optimizer "
                                  "state for the stage it stopped in")
        try:
            state.optimizer.load_state_dict(pending["optimizer"])
            if pending["scheduler"] is not None:
                state.scheduler.load_state_dict(pending["scheduler"])
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise CheckpointError(f"{pending['manifest']}: the checkpoint's optimizer state "
                                  f"does not fit this run ({type(e).__name__}: {e})") from None
