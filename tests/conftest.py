"""Shared helpers: compose kdrun configs in-process and run the real `kdrun` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from kdrun.config.roles import register_role_groups
from kdrun.config.tree import config_dir

register_role_groups()  # teacher=/student= and the recipe groups, as every kdrun entry point does
# Few epochs: enough to exercise every stage, fast on 2 CPU cores.
QUICK = ["teacher.epochs=2", "student.epochs=2"]


def compose_config(tmp_path: Path, overrides: list[str] = (), quick: bool = True):
    """The config `kdrun OVERRIDES` would run, with outputs and teacher store under tmp_path."""
    overrides = [f"paths.output_root={tmp_path}", *(QUICK if quick else []), *overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


def run_in_process(tmp_path: Path, overrides: list[str] = (), name: str = "run", quick: bool = True) -> tuple[dict, Path]:
    from kdrun.pipeline import run

    out = tmp_path / "runs" / name
    return run(compose_config(tmp_path, overrides, quick), out), out


def kdrun_command(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run the installed `kdrun` console script as a user would; `env` values of None unset a variable."""
    environment = {**os.environ, **(env or {})}
    environment = {key: value for key, value in environment.items() if value is not None}
    script = Path(sys.executable).parent / "kdrun"
    return subprocess.run([str(script), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def tree_snapshot():
    """A function returning {relative path: (size, mtime_ns)} of every file under a directory."""

    def snapshot(root: Path) -> dict:
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(root.rglob("*")) if p.is_file()}

    return snapshot


def random_logits(batch: int, classes: int, seed: int, scale: float = 2.0, dtype=torch.float64):
    """(student logits, teacher logits, labels): seeded random inputs for loss-formula tests."""
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator, dtype=dtype) * scale
    teacher = torch.randn(batch, classes, generator=generator, dtype=dtype) * scale
    return student, teacher, torch.randint(0, classes, (batch,), generator=generator)
