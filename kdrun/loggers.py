"""Experiment loggers for each stage: CSV (default), wandb (offline without an API key), none."""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf

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


def build_logger(cfg, stage: str, output_dir: Path, group: str):
    """A Lightning logger for `stage` ("teacher" or "student"), or False for none."""
    name = cfg.logger.name
    if name == "none":
        return False
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="logs", version=stage)
    if name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(
            project=cfg.logger.project, entity=cfg.logger.entity, name=f"{output_dir.name}-{stage}",
            group=group, job_type=stage, tags=list(cfg.logger.tags or []), save_dir=str(output_dir),
            mode=wandb_mode(cfg.logger), config=OmegaConf.to_container(cfg, resolve=True),
        )
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


def close_logger(logger, summary: dict | None = None) -> None:
    """Finish a stage's logger; a wandb run must end before the next stage starts its own."""
    if not logger:
        return
    logger.finalize("success")
    if is_wandb(logger):
        import wandb

        if summary:  # the CSV logger needs none: metrics.json holds the summary
            logger.experiment.summary.update(summary)
        wandb.finish()
