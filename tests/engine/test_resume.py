"""Exact resume: a run killed after an epoch checkpoint and started again ends as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import compose_config, kdrun_command, read_metrics

# 512 samples in batches of 32: 16 steps an epoch; student dropout, so the RNG state must be restored
RUN = ["data=gaussian_binary", "data.n_train=512", "data.n_val=64", "data.n_test=256", "data.batch_size=32",
       "teacher=mlp", "teacher.model.width=16", "student=mlp", "student.model.width=16",
       "student.model.dropout=0.2", "teacher.epochs=2", "student.epochs=8", "trainer.enable_progress_bar=false"]
NOT_COMPARED = ("wall_time_s", "teacher/source", "teacher/outputs_computed", "student/resumed_epochs")


@pytest.mark.slow  # several processes or sweep jobs: the optional `pytest -m slow` job
def test_a_killed_run_resumes_the_student_and_ends_as_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "KDRUN_OUTPUT_ROOT": str(tmp_path)}
    whole = kdrun_command([*RUN, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path, env)
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "killed"
    command = [str(Path(sys.executable).parent / "kdrun"), *RUN, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run_dir / "checkpoints" / "student" / "last.ckpt"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # as a preempted or timed-out job dies: no clean-up
    process.wait()
    assert checkpoint.exists() and not (run_dir / "metrics.json").exists(), "killed too late to test a resume"

    again = kdrun_command([*RUN, f"hydra.run.dir={run_dir}"], tmp_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming student from epoch" in again.stdout
    expected, resumed = read_metrics(tmp_path / "whole"), read_metrics(run_dir)
    assert set(expected) == set(resumed)
    assert resumed["student/resumed_epochs"] >= 1 and expected["student/resumed_epochs"] == 0
    for key, value in expected.items():
        if not any(part in key for part in NOT_COMPARED):
            assert resumed[key] == value, key  # bit for bit, incl. the batch-order and init checksums


def test_no_resume_once_the_run_has_finished(tmp_path):
    import torch

    from kdrun.engine.resume import StageOwner, checkpoint_dir, plan_resume

    run_dir = tmp_path / "run"
    owner = StageOwner.of("student", {"loss": {"name": "kd"}})
    assert plan_resume(run_dir, {"student": owner})["student"].path is None
    checkpoint_dir(run_dir, "student").mkdir(parents=True)
    torch.save({"epoch": 2, "kdrun": {"belongs_to": owner.record()}}, checkpoint_dir(run_dir, "student") / "last.ckpt")
    resume = plan_resume(run_dir, {"student": owner})["student"]
    assert resume.path.endswith("last.ckpt") and resume.epochs_done == 3
    (run_dir / "metrics.json").write_text("{}")
    assert plan_resume(run_dir, {"student": owner})["student"].path is None


def test_batch_order_digest_survives_a_checkpoint():
    from kdrun.engine.resume import RunningDigest

    whole = RunningDigest()
    for epoch in (b"a", b"b", b"c"):
        whole.update(epoch)
    resumed = RunningDigest()
    resumed.update(b"a")
    continued = RunningDigest(resumed.state)
    continued.update(b"b")
    continued.update(b"c")
    assert continued.hexdigest() == whole.hexdigest()


def test_under_slurm_lightning_does_not_requeue_itself(tmp_path, monkeypatch):
    """submitit's launcher owns requeueing (USR2, same directory, resume from last.ckpt)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from kdrun.engine.recipes import stage_budget
    from kdrun.data.datamodule import DataSplits
    from kdrun.engine.trainer import build_trainer as _trainer
    from kdrun.config.seeds import resolve_seeds

    for name, value in {"SLURM_JOB_ID": "123", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "kdrun", "SLURM_PROCID": "0",
                        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "node1"}.items():
        monkeypatch.setenv(name, value)
    cfg = compose_config(tmp_path, ["data=gaussian_binary", "trainer.accelerator=cpu"])
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    trainer = _trainer(cfg, "student", stage_budget(cfg.student, splits, "student"), tmp_path, False)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
    monkeypatch.delenv("SLURM_NTASKS")
    trainer = _trainer(cfg, "student", stage_budget(cfg.student, splits, "student"), tmp_path, False)
    assert not isinstance(trainer._accelerator_connector.cluster_environment, SLURMEnvironment)
