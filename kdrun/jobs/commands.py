"""What every kdrun command shares as a Hydra job: a bad configuration in a single run is one line on stderr
and exit code 2 (nothing trained); inside a sweep it is raised, so Hydra records the failed job and goes on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from kdrun.errors import ConfigError


def run_command_job(command: str, task: Callable, cfg):
    """`task(cfg, output_dir)` in the running Hydra job of `command` (e.g. kdrun-prefill)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    try:
        return task(cfg, Path(hydra_cfg.runtime.output_dir))
    except ConfigError as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        print(f"{command}: invalid configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None
