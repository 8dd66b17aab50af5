"""Failure isolation in sweeps: a failing job is recorded in its run directory and in the sweep summary,
the other jobs' results are complete, and the sweep command exits non-zero naming the failed jobs."""

from __future__ import annotations

import pytest

import json
import os
from pathlib import Path


from support import FakeJobReturn, append_summary_line, job_config, kdrun_command, read_metrics
from kdrun.jobs.status import STATUS_FILE, write_job_status
from kdrun.jobs.sweep_recorder import SUMMARY_FILE, SweepRecorder, read_summary

TINY = ["teacher.epochs=1", "student.epochs=1", "trainer.enable_progress_bar=false"]


def only_sweep(root: Path) -> Path:
    (sweep,) = list((root / "outputs" / "sweeps").iterdir())
    return sweep


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / STATUS_FILE).read_text())


@pytest.mark.slow  # several processes or sweep jobs: the optional `pytest -m slow` job
def test_failed_jobs_are_recorded_and_the_rest_of_the_sweep_completes(tmp_path):
    # jobs: 0 fine, 1 invalid alpha, 2 non-finite loss (lr 1e30), 3 invalid alpha; sequential (basic launcher)
    result = kdrun_command(["-m", "student.optimizer.lr=0.003,1e30", "loss.alpha=0.5,1.5", *TINY], cwd=tmp_path)
    assert result.returncode != 0  # Hydra re-raises the first failure after the whole batch ran
    sweep = only_sweep(tmp_path)

    fine = status(sweep / "0")
    assert fine["status"] == "completed" and isinstance(fine["objective"], float)
    metrics = read_metrics(sweep / "0")
    assert metrics["teacher/source"] == "trained" and (sweep / "0" / "student.pt").is_file()

    for job in ("1", "3"):
        bad_alpha = status(sweep / job)
        assert bad_alpha["status"] == "failed"
        assert bad_alpha["error"].startswith("ConfigError: ") and "alpha=1.5" in bad_alpha["error"]
        assert "validate_config" in bad_alpha["traceback"]
        assert not (sweep / job / "metrics.json").exists()

    non_finite = status(sweep / "2")
    assert non_finite["status"] == "failed"
    assert non_finite["error"].startswith("TrainingDiverged: student training diverged at step")
    assert "TrainingDiverged" in non_finite["traceback"]

    lines = sorted(read_summary(sweep), key=lambda line: line["job"])
    assert [line["job"] for line in lines] == [0, 1, 2, 3]
    assert [line["status"] for line in lines] == ["completed", "failed", "failed", "failed"]
    assert lines[0]["objective"] == fine["objective"] and lines[0]["error"] is None
    assert "student.optimizer.lr=1e+30" in lines[2]["overrides"] and "loss.alpha=0.5" in lines[2]["overrides"]
    assert [line["error"] for line in lines[1:]] == [status(sweep / job)["error"] for job in ("1", "2", "3")]
    assert all(Path(line["run_dir"]) == sweep / str(line["job"]) for line in lines)

    # the command names every failed job and where its details are
    assert "kdrun: 3 of 4 sweep jobs failed (summary: " in result.stderr
    for job in ("1", "2", "3"):
        assert f"job {job} [" in result.stderr and str(sweep / job / STATUS_FILE) in result.stderr
    assert "job 0 [" not in result.stderr


def test_status_file_is_written_by_rank_zero_only(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")  # an extra DDP rank of the same job
    write_job_status(tmp_path, RuntimeError("boom"))
    assert not (tmp_path / STATUS_FILE).exists()
    monkeypatch.setenv("LOCAL_RANK", "0")
    write_job_status(tmp_path, objective=0.5)
    recorded = status(tmp_path)
    assert recorded["status"] == "completed" and recorded["objective"] == 0.5 and "error" not in recorded


def test_callback_restores_the_environment_a_reused_worker_would_carry_over(tmp_path, monkeypatch):
    """joblib's workers run job after job: one job's WANDB_MODE / PL_GLOBAL_SEED must not reach the next."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # earlier in-process runs of the suite set it
    monkeypatch.setenv("KDRUN_TEST_KEPT", "before")
    recorder = SweepRecorder()
    config = job_config(tmp_path, 0)
    recorder.on_job_start(config=config)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["PL_GLOBAL_SEED"] = "7"
    os.environ["KDRUN_TEST_KEPT"] = "changed by the job"
    recorder.on_job_end(config=config, job_return=FakeJobReturn(FloatingPointError("nan at step 3")))
    assert "WANDB_MODE" not in os.environ and "PL_GLOBAL_SEED" not in os.environ
    assert os.environ["KDRUN_TEST_KEPT"] == "before"
    (line,) = read_summary(tmp_path)
    assert line == {"job": 0, "overrides": ["seed=0"], "status": "failed", "error": "FloatingPointError: nan at step 3",
                    "objective": None, "run_dir": str(tmp_path / "0")}


def test_summary_lines_from_parallel_jobs_stay_whole(tmp_path):
    """Many processes appending at once (as joblib or submitit jobs do) leave one parseable line each."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        pool.map(append_summary_line, [(str(tmp_path), num) for num in range(40)])
    lines = read_summary(tmp_path)
    assert sorted(line["job"] for line in lines) == list(range(40))
    assert (tmp_path / SUMMARY_FILE).read_text().count("\n") == 40


def test_the_recorder_is_registered_for_every_run():
    from hydra import compose, initialize_config_dir

    from kdrun.config.tree import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True)
    assert cfg.hydra.callbacks.sweep_recorder._target_ == "kdrun.jobs.sweep_recorder.SweepRecorder"
