"""The sweep recorder, a Hydra callback: failure isolation and state hygiene for sweeps (`kdrun -m ...`).

* `SweepRecorder`, a Hydra callback (configs/train.yaml `hydra.callbacks`), appends one line per
  job to `<sweep dir>/sweep_summary.jsonl` (job number, overrides, status, error, run directory).
  Jobs of a parallel launcher finish at the same time, so lines are appended under a file lock.
  When jobs failed, the sweep command lists them on stderr before it exits non-zero.
* Process-reusing launchers (joblib's loky workers) would carry one job's state into the next:
  environment variables (WANDB_MODE, PL_GLOBAL_SEED, ...) and a wandb run left open by a failed
  job. The callback restores the environment and closes such a run after every job.
* Every job's own status.json is written by the command (kdrun.jobs.status); launcher checks
  are in kdrun.jobs.launchers.

Only the standard library, Hydra and filelock are imported here: Hydra loads callbacks at start-up.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kdrun.jobs.launchers import reject_swept_world_size
from kdrun.jobs.status import STATUS_FILE, describe_error, is_rank_zero

SUMMARY_FILE = "sweep_summary.jsonl"


def read_summary(sweep_dir: Path | str, start: int = 0) -> list[dict]:
    """The summary lines of a sweep, from byte offset `start` (lines of earlier sweeps into the same dir are skipped)."""
    path = Path(sweep_dir) / SUMMARY_FILE
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(start)
        return [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]


class SweepRecorder(Callback):
    """Hydra callback: a per-job line in the sweep summary, state hygiene for reused worker processes,
    and a list of the failed jobs when the sweep command exits."""

    def __init__(self, summary_file: str = SUMMARY_FILE) -> None:
        self.summary_file = summary_file
        self._environment: dict[str, str] | None = None

    # --- main process -------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        reject_swept_world_size(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        summary = sweep_dir / self.summary_file
        start = summary.stat().st_size if summary.exists() else 0
        # Hydra re-raises the first failed job after the whole batch ran and skips on_multirun_end;
        # an exit hook still runs then, so the user learns which jobs failed and where to look.
        atexit.register(report_failed_jobs, sweep_dir, start)

    # --- job process (the same as the main process for the basic launcher) -------------------
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._environment = dict(os.environ)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        try:
            if _is_multirun(config) and is_rank_zero():
                self._append_summary(config, job_return)
        finally:
            _finish_open_wandb_run(failed=_job_failed(job_return),
                                   job_dir=OmegaConf.select(config, "hydra.runtime.output_dir"))
            self._restore_environment()

    def _append_summary(self, config: DictConfig, job_return: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        failed = _job_failed(job_return)
        value = job_return._return_value  # the property would re-raise a failed job's error
        line = {
            "job": int(config.hydra.job.num),
            "overrides": list(config.hydra.overrides.task),
            "status": "failed" if failed else "completed",
            "error": describe_error(value) if failed else None,
            "objective": None if failed else value,
            "run_dir": str(config.hydra.runtime.output_dir),
        }
        summary = sweep_dir / self.summary_file
        with FileLock(str(summary) + ".lock"):
            with open(summary, "a") as handle:
                handle.write(json.dumps(line, default=str) + "\n")

    def _restore_environment(self) -> None:
        if self._environment is None:
            return
        for key in set(os.environ) - set(self._environment):
            del os.environ[key]
        os.environ.update(self._environment)
        self._environment = None


def _is_multirun(config: DictConfig) -> bool:
    return str(OmegaConf.select(config, "hydra.mode", default="")) in ("RunMode.MULTIRUN", "MULTIRUN")


def _job_failed(job_return: Any) -> bool:
    return getattr(getattr(job_return, "status", None), "name", "") == "FAILED"


def _finish_open_wandb_run(failed: bool, job_dir: str | None = None) -> None:
    """A job that failed mid-stage leaves its wandb run live; the next job in this process would log into it.
    Only a run of this job's own directory is finished: a packed sweep's other members have theirs open."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    if job_dir is not None and not Path(str(run.dir)).resolve().is_relative_to(Path(str(job_dir)).resolve()):
        return
    run.finish(exit_code=1 if failed else 0)


def report_failed_jobs(sweep_dir: Path, start: int = 0) -> None:
    lines = read_summary(sweep_dir, start)
    failed = [line for line in lines if line["status"] == "failed"]
    if not failed:
        return
    print(f"kdrun: {len(failed)} of {len(lines)} sweep jobs failed (summary: {Path(sweep_dir) / SUMMARY_FILE}):",
          file=sys.stderr)
    for line in sorted(failed, key=lambda entry: entry["job"]):
        print(f"  job {line['job']} [{' '.join(line['overrides'])}]: {line['error']}\n"
              f"    details: {Path(line['run_dir']) / STATUS_FILE}", file=sys.stderr)
