"""Where the config tree lives, and loading single option files from it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_dir() -> Path:
    """The config tree: packaged inside a wheel, or ./configs in a source checkout."""
    packaged = Path(__file__).parent / "configs"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "configs"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def load_option(group: str, name: str) -> DictConfig | None:
    """The file configs/<group>/<name>.yaml, or None when there is no such option."""
    path = config_dir() / group / f"{name}.yaml"
    return OmegaConf.load(path) if path.is_file() else None


AUTO_SWITCH = ("auto", "true", "false")


def auto_switch(node, key: str, where: str) -> str:
    """An `auto | true | false` option as one of those strings (YAML and the command line give booleans;
    0 and 1 are not booleans here)."""
    from kdrun.value_checks import check_choice

    value = node.get(key, "auto")
    if isinstance(value, bool):
        return "true" if value else "false"
    return check_choice(value, f"{where}.{key}", AUTO_SWITCH)


def auto_switch_applies(node, key: str, where: str, obstacle, needs: str) -> bool:
    """Whether an `auto | true | false` optimisation applies: `auto` when `obstacle()` names nothing
    in its way, `true` where something is in its way is a ConfigError naming it."""
    from kdrun.errors import ConfigError

    mode = auto_switch(node, key, where)
    if mode == "false":
        return False
    reason = obstacle()
    if reason is not None and mode == "true":
        raise ConfigError(f"{where}.{key}=true {needs}, but {reason}; allowed: {where}.{key}=auto or false")
    return reason is None
