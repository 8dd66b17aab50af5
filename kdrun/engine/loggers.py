"""Experiment loggers for each stage: CSV (default), wandb (offline without an API key), none."""

from __future__ import annotations

import csv
import netrc
import os
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import OmegaConf

from kdrun.atomic_files import atomic_path
from kdrun.errors import ConfigError


def wandb_api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_mode(cfg_logger) -> str:
    """The configured mode, else WANDB_MODE, else online with an API key and offline without."""
    mode = cfg_logger.get("mode") or os.environ.get("WANDB_MODE")
    if mode:
        if mode not in ("online", "offline", "disabled"):
            raise ConfigError(f"logger.mode={mode!r}; allowed: online, offline, disabled")
        return mode
    return "online" if wandb_api_key_configured() else "offline"


def build_logger(cfg, stage: str, output_dir: Path, group: str, epochs_done: int = 0):
    """A Lightning logger for `stage` ("teacher" or "student"), or False for none.

    `epochs_done` > 0 when the stage resumes from a checkpoint: the CSV log keeps the rows of
    those epochs (and drops any of a later, unfinished epoch, which the resumed run repeats)."""
    name = cfg.logger.name
    if name == "none":
        return False
    if name == "csv":
        return _csv_logger(output_dir, stage, epochs_done)
    if name == "wandb":
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        # The run is started here, as a new run beside any other of this process (a pack's members train at
        # once, each into its own run; Lightning's logger would join the process's active run instead).
        run = wandb.init(
            project=cfg.logger.project, entity=cfg.logger.entity, name=f"{output_dir.name}-{stage}",
            group=group, job_type=stage, tags=list(cfg.logger.tags or []), dir=str(output_dir),
            mode=wandb_mode(cfg.logger), config=OmegaConf.to_container(cfg, resolve=True), reinit="create_new",
        )
        return WandbLogger(experiment=run, save_dir=str(output_dir))
    raise ConfigError(f"logger.name={name!r} is unknown; allowed: csv, wandb, none")


def is_wandb(logger) -> bool:
    return type(logger).__name__ == "WandbLogger"


def log_run_figures(logger, run_dir: Path) -> dict[str, Path]:
    """Draw the run's reliability diagram and phi scatter (kdrun.report.plots) into
    `run_dir/figures/` and log them as images to the logger's run."""
    from kdrun.report.plots import phi_scatter, reliability_diagram

    figures_dir = run_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    predictions = run_dir / "predictions.npz"
    figures = {
        "figures/reliability_test": reliability_diagram(predictions, figures_dir / "reliability_test.png"),
        "figures/phi_scatter_train": phi_scatter(predictions, figures_dir / "phi_scatter_train.png", split="train"),
    }
    for key, path in figures.items():
        logger.log_image(key=key, images=[str(path)])
    return figures


def close_logger(logger, summary: dict | None = None, failed: bool = False) -> None:
    """Finish a stage's logger; a wandb run must end before the next stage starts its own."""
    if not logger:
        return
    logger.finalize("failed" if failed else "success")
    if is_wandb(logger):
        if summary:  # the CSV logger needs none: metrics.json holds the summary
            logger.experiment.summary.update(summary)
        # this logger's own run (several may be open: a pack's members)
        logger.experiment.finish(exit_code=1 if failed else 0)


def _csv_logger(output_dir: Path, stage: str, epochs_done: int) -> CSVLogger:
    if not epochs_done:
        return CSVLogger(save_dir=str(output_dir), name="logs", version=stage)
    return ResumableCSVLogger(epochs_done, save_dir=str(output_dir), name="logs", version=stage)


class ResumedHistoryWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; a resumed stage keeps its finished epochs."""

    def __init__(self, log_dir: str, epochs_done: int):
        self.epochs_done = epochs_done  # read by _check_log_dir_exists, which the base __init__ calls
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        kept = keep_finished_epochs(Path(self.metrics_file_path), self.epochs_done)
        if kept is None:
            super()._check_log_dir_exists()
        else:
            self.metrics_keys = kept  # later rows append under this header (rewritten if keys are added)


class ResumableCSVLogger(CSVLogger):
    def __init__(self, epochs_done: int, **options):
        super().__init__(**options)
        self.epochs_done = epochs_done

    @property
    @rank_zero_experiment
    def experiment(self) -> ResumedHistoryWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumedHistoryWriter(self.log_dir, self.epochs_done)
        return self._experiment


def keep_finished_epochs(metrics_file: Path, epochs_done: int) -> list[str] | None:
    """Rewrite a stage's metrics.csv with only the rows of epochs < `epochs_done`; its header, or None
    when there is no file to keep."""
    if not metrics_file.is_file():
        return None
    with open(metrics_file, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = sorted(reader.fieldnames or []), list(reader)  # Lightning's writer keeps keys sorted
    kept = [row for row in rows if _epoch_of(row) is None or _epoch_of(row) < epochs_done]
    with atomic_path(metrics_file) as staging:
        with open(staging, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
    return header


def _epoch_of(row: dict) -> int | None:
    value = row.get("epoch")
    return None if value in (None, "") else int(float(value))
