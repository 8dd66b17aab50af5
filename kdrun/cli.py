"""The `kdrun` command: a Hydra application around `kdrun.pipeline.run`.

Only Hydra and OmegaConf are imported at module level, so `kdrun --help` and
`kdrun --cfg job` answer without loading torch or Lightning.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from kdrun.config_tree import config_dir


def register_model_zoo(configs: Path) -> None:
    """Make every file of the one zoo (configs/model/) selectable as `teacher=` and `student=`.

    Hydra has no group aliases; storing each zoo entry under both groups, packaged at
    teacher.model / student.model, keeps a single folder of architectures while the
    command line reads `kdrun teacher=cnn student=mlp`.
    """
    store = ConfigStore.instance()
    for path in sorted((configs / "model").glob("*.yaml")):
        node = OmegaConf.load(path)
        for role in ("teacher", "student"):
            store.store(group=role, name=path.stem, node=node, package=f"{role}.model")


def register_recipes(configs: Path) -> None:
    """Make every training recipe (configs/recipe/) selectable as `teacher_recipe=` and `student_recipe=`,
    merged into teacher / student, so each stage picks its own budget, optimiser and schedule."""
    store = ConfigStore.instance()
    for path in sorted((configs / "recipe").glob("*.yaml")):
        node = OmegaConf.load(path)
        for role in ("teacher", "student"):
            store.store(group=f"{role}_recipe", name=path.stem, node=node, package=role)


# configs/hydra/launcher/joblib.yaml deliberately replaces the joblib plugin's preset of the same name;
# Hydra still checks it against the plugin's schema, and only the notice that it does so is silenced.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema")

CONFIGS = config_dir()
register_model_zoo(CONFIGS)
register_recipes(CONFIGS)


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kdrun.distributed import process_rank
    from kdrun.errors import ConfigError
    from kdrun.pipeline import run
    from kdrun.sweep_callbacks import check_launcher_support, write_job_status

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        check_launcher_support(cfg, hydra_cfg)
        metrics = run(cfg, output_dir=output_dir)
        if process_rank() > 0:
            return None  # DDP: only rank 0 evaluates, writes outputs and answers the sweeper
        objective = sweeper_objective(cfg, metrics)
    except Exception as error:
        # recorded in the run directory, so a failed sweep job is explained where its results would be
        write_job_status(output_dir, error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job and carries on with the sweep
        if isinstance(error, ConfigError):
            print(f"kdrun: invalid configuration: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    write_job_status(output_dir, objective=objective)
    return objective


def sweeper_objective(cfg: DictConfig, metrics: dict) -> float:
    """The value Hydra sweepers (e.g. Optuna) optimise: `objective`, a key of metrics.json.

    A NaN or a missing key would crash a whole Optuna sweep, so both stop this job instead."""
    import math

    key = cfg.get("objective") or "student/val/acc"
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, float))
        raise ValueError(f"objective={key!r} is {value!r} in this run's metrics.json; allowed: a numeric key such as "
                         f"{', '.join(numeric[:8])}, ...")
    return float(value)


if __name__ == "__main__":
    main()
