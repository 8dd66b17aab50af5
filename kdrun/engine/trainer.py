"""Each stage's `lightning.Trainer`, built the same way for the teacher and the student, and `fit`."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from kdrun.callbacks import progress_callbacks
from kdrun.engine.distributed import cluster_plugins
from kdrun.engine.recipes import Budget
from kdrun.engine.resume import AtomicCheckpointIO, epoch_checkpoint


def resolve_precision(precision) -> str:
    """`auto`: bf16 mixed precision on a GPU that supports it, full precision elsewhere (CPU)."""
    if precision not in (None, "auto"):
        return str(precision)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def trainer_arguments(cfg, stage: str) -> dict:
    """The `lightning.Trainer` arguments of `stage` that come from the config (`trainer.*` and the recipe)."""
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args["precision"] = resolve_precision(trainer_args.get("precision"))
    clip = cfg[stage].get("gradient_clip_val")
    if clip is not None:  # the stage's recipe wins over the shared trainer setting
        trainer_args["gradient_clip_val"] = clip
    return trainer_args


def build_trainer(cfg, stage: str, budget: Budget, output_dir: Path, logger, extra_callbacks=()) -> L.Trainer:
    trainer_args = trainer_arguments(cfg, stage)
    return L.Trainer(
        max_epochs=budget.max_epochs, max_steps=budget.max_steps, logger=logger,
        default_root_dir=str(output_dir / "lightning" / stage),  # a stage's own: SLURM's hpc_ckpt_* stay apart
        enable_checkpointing=True, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=int(cfg[stage].get("val_every_n_epochs", 1)),
        callbacks=[*progress_callbacks(stage, trainer_args.pop("enable_progress_bar", True)),
                   epoch_checkpoint(output_dir, stage), ValidateLastEpoch(), *extra_callbacks],
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        use_distributed_sampler=False,  # kdrun's samplers shard by rank (kdrun.data.samplers)
        enable_progress_bar=sys.stderr.isatty() and cfg.trainer.get("enable_progress_bar", True),
        **trainer_args,
    )


class ValidateLastEpoch(Callback):
    """`val_every_n_epochs` skips epochs, never the last: the final val/* metrics are what sweepers select on.
    At the start of the last epoch of an epoch budget the interval becomes 1 (the epoch's validation runs
    inside the fit, before its checkpoint); a step budget's last epoch is unknown ahead, so the stage
    validates once more after the fit when it ended between validations (kdrun.engine.stages)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 == trainer.max_epochs:
            trainer.check_val_every_n_epoch = 1


def fit(trainer: L.Trainer, module, ckpt_path: str | None, datamodule) -> None:
    """`trainer.fit`, with Ctrl-C surfacing as KeyboardInterrupt: Lightning catches it, ignores SIGINT
    from then on and exits with code 1, which would pass for an ordinary crash."""
    try:
        trainer.fit(module, ckpt_path=ckpt_path, datamodule=datamodule)
    except SystemExit as exit_:
        if isinstance(exit_.__context__, KeyboardInterrupt):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt(f"{module.stage} stage interrupted at step {module.global_step}") from None
        raise


def quiet_framework_chatter() -> None:
    """Keep the console to progress bars and kdrun's own lines."""
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*is smaller than the logging interval.*")
    # The frozen teacher is in eval mode on purpose (DistillationModule.train keeps it there).
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
