"""Where the config tree lives, and loading single option files from it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """The config tree: packaged inside a wheel, or ./configs in a source checkout."""
    package = Path(__file__).resolve().parents[1]  # kdrun/
    packaged = package / "configs"
    return packaged if packaged.is_dir() else package.parent / "configs"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def load_option(group: str, name: str) -> DictConfig | None:
    """The file configs/<group>/<name>.yaml, or None when there is no such option."""
    path = config_dir() / group / f"{name}.yaml"
    return OmegaConf.load(path) if path.is_file() else None
