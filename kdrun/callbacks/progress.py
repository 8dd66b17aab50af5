"""Stage progress: a live bar on a terminal, one line per epoch in logs and pipes."""

from __future__ import annotations

import logging
import sys
import time

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

log = logging.getLogger("kdrun")


class StageProgressBar(TQDMProgressBar):
    """One bar line per stage: names the stage and epoch, leaves out the logger's version."""

    LOSS_READ_INTERVAL_S = 0.5

    def __init__(self, stage: str):
        super().__init__(leave=True)  # the last line of each stage stays on screen
        self.stage = stage
        self._loss, self._loss_read_at = None, float("-inf")

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        # The step loss stays on the device (no per-step sync); reading it is one, so at most twice a second.
        latest = getattr(pl_module, "latest_loss", None)
        if latest is not None and time.monotonic() - self._loss_read_at >= self.LOSS_READ_INTERVAL_S:
            self._loss, self._loss_read_at = float(latest), time.monotonic()
        if self._loss is not None:
            metrics["loss"] = f"{self._loss:.4f}"
        return metrics

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.set_description(self.stage)
        return bar

    def init_validation_tqdm(self):
        bar = super().init_validation_tqdm()
        bar.disable = True  # validation takes a blink here; a second bar would only flicker
        return bar

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        self.train_progress_bar.set_description(f"{self.stage} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


class EpochLogLine(Callback):
    """Without a terminal, a progress bar is noise: log each epoch's metrics on one line instead."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_validation_end(self, trainer, pl_module):  # after the epoch's validation metrics are computed
        if trainer.sanity_checking:
            return
        shown = {}
        loss = pl_module.local_epoch_loss() if hasattr(pl_module, "local_epoch_loss") else None
        if loss is not None:
            shown["train/loss"] = loss  # the epoch's mean so far (this process's samples)
        shown.update({k: float(v) for k, v in trainer.callback_metrics.items() if k in ("val/acc", "val/nll")})
        log.info("%s epoch %d/%d  %s", self.stage, trainer.current_epoch + 1, trainer.max_epochs,
                 "  ".join(f"{k} {v:.4f}" for k, v in shown.items()))


def progress_callbacks(stage: str, enabled: bool) -> list[Callback]:
    if not enabled:
        return []
    return [StageProgressBar(stage)] if sys.stderr.isatty() else [EpochLogLine(stage)]
