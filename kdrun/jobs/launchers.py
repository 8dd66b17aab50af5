"""Combinations of settings and Hydra launchers that cannot work, stopped with a clear message.

Only Hydra and OmegaConf are imported here: the checks run before any training module loads.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from kdrun.errors import ConfigError

JOBLIB_TARGET = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def _launcher_target(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")


def check_launcher_support(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """Stop a job whose settings cannot work under the launcher that runs it."""
    if str(hydra_cfg.launcher.get("_target_", "")) != JOBLIB_TARGET:
        return
    num_workers = int(cfg.data.get("num_workers") or 0)
    if num_workers > 0:
        raise ConfigError(
            f"data.num_workers={num_workers} under hydra/launcher=joblib: DataLoader worker processes inside "
            f"joblib's loky workers can crash; allowed: data.num_workers=0, or hydra/launcher=local for loader workers")
    strategy = str(cfg.trainer.get("strategy") or "")
    devices = cfg.trainer.get("devices")
    nodes = cfg.trainer.get("num_nodes") or 1
    if "ddp" in strategy or (isinstance(devices, int) and devices > 1) or int(nodes) > 1:
        raise ConfigError(
            f"trainer.devices={devices} trainer.strategy={strategy or None} trainer.num_nodes={nodes} under "
            f"hydra/launcher=joblib: multi-process training cannot start inside joblib's workers; allowed: one "
            f"device per job here, or hydra/launcher=local / slurm (a fresh process per job)")


def reject_swept_world_size(config: DictConfig) -> None:
    """The SLURM launcher sizes every job from the sweep's base config, so a swept device count would
    submit jobs whose allocation disagrees with their trainer (Lightning then stops them on the node)."""
    if _launcher_target(config) != SLURM_TARGET:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override() and override.get_key_element() in ("trainer.devices", "trainer.num_nodes"):
            raise ConfigError(
                f"{override.input_line} under hydra/launcher=slurm: every job of one sweep gets the same SLURM "
                f"allocation (tasks_per_node, gpus_per_node, nodes); allowed: one sweep per device count, "
                f"e.g. kdrun -m hydra/launcher=slurm trainer.devices=2 ...")
