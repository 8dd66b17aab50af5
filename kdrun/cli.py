"""The `kdrun` command: a Hydra application around `kdrun.pipeline.run`.

Only Hydra and OmegaConf are imported at module level, so `kdrun --help` and
`kdrun --cfg job` answer without loading torch or Lightning.
"""

from __future__ import annotations

import sys
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


CONFIGS = config_dir()
register_model_zoo(CONFIGS)


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kdrun.errors import ConfigError
    from kdrun.pipeline import run

    hydra_cfg = HydraConfig.get()
    try:
        metrics = run(cfg, output_dir=Path(hydra_cfg.runtime.output_dir))
    except ConfigError as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job and carries on with the sweep
        print(f"kdrun: invalid configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # Returned so that Hydra sweepers (e.g. Optuna) can optimise it.
    return metrics.get("student/test/acc")


if __name__ == "__main__":
    main()
