"""status.json: how every run ended, written by the kdrun command around the pipeline.

completed (with the sweeper objective), failed (with the error and its traceback), interrupted
(Ctrl-C), or invalid configuration (a config Hydra could not compose). A single run and every
job of a sweep write one, so a failed job is explained where its results would have been.
Only the standard library is imported here (the command loads it before torch).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from kdrun.atomic_files import DISK_FULL_ERRNOS, write_json
from kdrun.errors import DiskFull

STATUS_FILE = "status.json"


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
