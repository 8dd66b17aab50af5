"""Failure isolation and launcher safety for sweeps (`kdrun -m ...`).

* `write_job_status` (called by kdrun/cli.py around `run`) leaves `status.json` in every run
  directory: completed with the objective; failed, interrupted or invalid configuration with the
  error and its traceback.
* `SweepRecorder`, a Hydra callback (configs/train.yaml `hydra.callbacks`), appends one line per
  job to `<sweep dir>/sweep_summary.jsonl` (job number, overrides, status, error, run directory).
  Jobs of a parallel launcher finish at the same time, so lines are appended under a file lock.
  When jobs failed, the sweep command lists them on stderr before it exits non-zero.
* Process-reusing launchers (joblib's loky workers) would carry one job's state into the next:
  environment variables (WANDB_MODE, PL_GLOBAL_SEED, ...) and a wandb run left open by a failed
  job. The callback restores the environment and closes such a run after every job.
* `check_launcher_support` stops combinations that cannot work with a clear message.

Only the standard library, Hydra and filelock are imported here: Hydra loads callbacks at start-up.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from kdrun.atomic_files import DISK_FULL_ERRNOS, write_json
from kdrun.errors import ConfigError, DiskFull

STATUS_FILE = "status.json"
SUMMARY_FILE = "sweep_summary.jsonl"

JOBLIB_TARGET = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def is_rank_zero() -> bool:
    """False in the extra processes of a multi-GPU job (SLURM tasks, DDP ranks): one record per job."""
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(variable)
        if value not in (None, ""):
            return value == "0"
    return True


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def write_job_status(output_dir: Path, error: BaseException | None = None, objective: float | None = None,
                     status: str | None = None) -> None:
    """Record how this run ended in `<output_dir>/status.json`: completed, failed, interrupted, or
    invalid configuration (a config Hydra could not compose)."""
    if not is_rank_zero():
        return
    record: dict[str, Any] = {"status": status or ("failed" if error else "completed"),
                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if error is None:
        record["objective"] = objective
    else:
        record["error"] = describe_error(error)
        record["traceback"] = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        write_json(Path(output_dir) / STATUS_FILE, record)  # never a half-written file for readers
    except OSError as write_error:  # e.g. the disk that stopped the run is still full
        print(f"kdrun: could not write {Path(output_dir) / STATUS_FILE} ({write_error}); the run {record['status']}: "
              f"{record.get('error', '')}", file=sys.stderr)


def describe_disk_full(error: BaseException, output_dir: Path) -> BaseException:
    """A write that failed for lack of space anywhere in the run, as DiskFull naming the directory."""
    if isinstance(error, DiskFull) or not (isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS):
        return error
    where = Path(error.filename).parent if getattr(error, "filename", None) else Path(output_dir)
    full = DiskFull(where)
    full.__cause__ = error
    return full


def read_summary(sweep_dir: Path | str, start: int = 0) -> list[dict]:
    """The summary lines of a sweep, from byte offset `start` (lines of earlier sweeps into the same dir are skipped)."""
    path = Path(sweep_dir) / SUMMARY_FILE
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(start)
        return [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]


def _launcher_target(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")


def check_launcher_support(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """Stop a job whose settings cannot work under the launcher that runs it."""
    if str(hydra_cfg.launcher.get("_target_", "")) != JOBLIB_TARGET:
        return
    num_workers = int(cfg.data.get("num_workers") or 0)
    if num_workers > 0:
        raise ConfigError(
            f"data.num_workers={num_workers} under hydra/launcher=joblib: DataLoader worker processes inside "
            f"joblib's loky workers can crash; allowed: data.num_workers=0, or hydra/launcher=local for loader workers")
    strategy = str(cfg.trainer.get("strategy") or "")
    devices = cfg.trainer.get("devices")
    nodes = cfg.trainer.get("num_nodes") or 1
    if "ddp" in strategy or (isinstance(devices, int) and devices > 1) or int(nodes) > 1:
        raise ConfigError(
            f"trainer.devices={devices} trainer.strategy={strategy or None} trainer.num_nodes={nodes} under "
            f"hydra/launcher=joblib: multi-process training cannot start inside joblib's workers; allowed: one "
            f"device per job here, or hydra/launcher=local / slurm (a fresh process per job)")


def _reject_swept_world_size(config: DictConfig) -> None:
    """The SLURM launcher sizes every job from the sweep's base config, so a swept device count would
    submit jobs whose allocation disagrees with their trainer (Lightning then stops them on the node)."""
    if _launcher_target(config) != SLURM_TARGET:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override() and override.get_key_element() in ("trainer.devices", "trainer.num_nodes"):
            raise ConfigError(
                f"{override.input_line} under hydra/launcher=slurm: every job of one sweep gets the same SLURM "
                f"allocation (tasks_per_node, gpus_per_node, nodes); allowed: one sweep per device count, "
                f"e.g. kdrun -m hydra/launcher=slurm trainer.devices=2 ...")


class SweepRecorder(Callback):
    """Hydra callback: a per-job line in the sweep summary, state hygiene for reused worker processes,
    and a list of the failed jobs when the sweep command exits."""

    def __init__(self, summary_file: str = SUMMARY_FILE) -> None:
        self.summary_file = summary_file
        self._environment: dict[str, str] | None = None

    # --- main process -------------------------------------------------------------------------
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _reject_swept_world_size(config)
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
            _finish_open_wandb_run(failed=_job_failed(job_return))
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


def _finish_open_wandb_run(failed: bool) -> None:
    """A job that failed mid-stage leaves its wandb run live; the next job in this process would log into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


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
