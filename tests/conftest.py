"""Fixtures every test may use; the shared helpers are in support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import kdrun_command

from kdrun.config.roles import register_role_groups

register_role_groups()  # teacher=/student= and the recipe groups, as every kdrun entry point does


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory):
    """One real `kdrun -m loss=ce,kd seed=0,1,2` sweep (six jobs, one teacher, one epoch each), shared by the
    tests that only read it: (the command's result, the output root holding sweeps/ and teacher_store/)."""
    root = tmp_path_factory.mktemp("quick_sweep")
    result = kdrun_command(["-m", "loss=ce,kd", "seed=0,1,2", "teacher.epochs=1", "student.epochs=1",
                            f"paths.output_root={root}"], cwd=root)
    return result, root


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory) -> Path:
    """A teacher store shared by the tests that need some teacher but test nothing of the store: each
    distinct teacher is trained once for the whole session (`run_in_process(..., store=shared_store)`)."""
    return tmp_path_factory.mktemp("shared") / "teacher_store"


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """A tiny CIFAR-10 release in its on-disk format (random images), shared read-only by the tests that need one."""
    import numpy as np

    from dataset_files import write_cifar10

    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, np.random.default_rng(0))
    return root


@pytest.fixture
def tree_snapshot():
    """A function returning {relative path: (size, mtime_ns)} of every file under a directory."""

    def snapshot(root: Path) -> dict:
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in sorted(root.rglob("*")) if p.is_file()}

    return snapshot
