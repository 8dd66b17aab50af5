"""Helpers the tests share (importable as `support`: pyproject's pytest `pythonpath`): compose kdrun
configs in-process, run the pipeline or the real `kdrun` command, and the targets of spawned processes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from kdrun.config.tree import config_dir

# Few epochs: enough to exercise every stage, fast on 2 CPU cores.
QUICK = ["teacher.epochs=2", "student.epochs=2"]
# A tiny augmented CIFAR run (with data.root= the `cifar_root` fixture): the view cache's tests
AUGMENTED_CIFAR = ["data=cifar10", "data.verify_checksums=false", "data.augment=cifar_standard", "data.val_fraction=0.25",
                   "teacher=cnn", "teacher.model.width=0.25", "student=mlp", "student.model.width=32",
                   "teacher.epochs=1", "student.epochs=2", "loss=kd", "loss.temperature=4"]


def compose_config(tmp_path: Path, overrides: list[str] = (), quick: bool = True):
    """The config `kdrun OVERRIDES` would run, with outputs and teacher store under tmp_path."""
    overrides = [f"paths.output_root={tmp_path}", *(QUICK if quick else []), *overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


def run_in_process(tmp_path: Path, overrides: list[str] = (), name: str = "run", quick: bool = True,
                   store: Path | None = None) -> tuple[dict, Path]:
    """`kdrun OVERRIDES` in this process; `store`: a teacher store to use (e.g. the session's shared one)."""
    from kdrun.pipeline import run

    out = tmp_path / "runs" / name
    overrides = [*overrides, *([f"teacher.store={store}"] if store is not None else [])]
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


def random_logits(batch: int, classes: int, seed: int, scale: float = 2.0, dtype=None):
    """(student logits, teacher logits, labels): seeded random inputs for loss-formula tests (float64)."""
    import torch

    dtype = dtype or torch.float64
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator, dtype=dtype) * scale
    teacher = torch.randn(batch, classes, generator=generator, dtype=dtype) * scale
    return student, teacher, torch.randint(0, classes, (batch,), generator=generator)


def data_cfg(name: str, root: Path | str = "/nonexistent-data-root", **values):
    """The `data` node of `kdrun data=NAME` (train.yaml's shared settings under configs/data/NAME.yaml), with
    paths.data_dir=root, checksum verification off (tests write tiny files), and `values` set."""
    shared = OmegaConf.load(config_dir() / "train.yaml").data
    own = OmegaConf.load(config_dir() / "data" / f"{name}.yaml")
    cfg = OmegaConf.create({"paths": {"data_dir": str(root)}, "seed": 0, "data": OmegaConf.merge(shared, own)})
    cfg.data.verify_checksums = False
    for key, value in values.items():
        cfg.data[key] = value
    return cfg.data


# --- targets of spawned processes (they import this module by name, so torch is imported where needed) ----

STORE_IDENTITY = {"data": "digits", "architecture": {"name": "linear", "in": 4, "out": 3}, "seed": 0, "epochs": 2}


def build_linear():
    import torch

    return torch.nn.Linear(4, 3)


def get_or_train(store, identity: dict, build, train):
    """The stored teacher, or `train` it under the entry's claim and publish it (as the pipeline does)."""
    with store.claim(identity, build) as claim:
        if claim.found:
            return claim.found
        return claim.publish(train(claim.model))


def store_worker(store_root: str, train_log: str, out_path: str, barrier) -> None:
    """Wait for the other processes, then ask the store for the same teacher (training it takes a second)."""
    import torch

    from kdrun.teachers.store import TeacherStore

    def train(model):
        time.sleep(1.0)
        with open(train_log, "a") as handle:
            handle.write(f"trained by {os.getpid()}\n")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        return {"pid": os.getpid()}

    barrier.wait(timeout=60)
    result = get_or_train(TeacherStore(store_root), STORE_IDENTITY, build_linear, train)
    torch.save({"source": result.source, "state": result.model.state_dict()}, out_path)


class FakeJobReturn:
    """What Hydra hands a callback's on_job_end: a completed job (objective 0.75) or a failed one."""

    def __init__(self, error: BaseException | None):
        from hydra.core.utils import JobStatus

        self.status = JobStatus.FAILED if error else JobStatus.COMPLETED
        self._return_value = error if error else 0.75


def job_config(sweep: Path, num: int):
    return OmegaConf.create({"hydra": {
        "mode": "MULTIRUN", "sweep": {"dir": str(sweep)}, "job": {"num": num},
        "overrides": {"task": [f"seed={num}"]}, "runtime": {"output_dir": str(sweep / str(num))}}})


def append_summary_line(arguments) -> None:
    """One sweep job's end, recorded by the sweep recorder (many at once in a pool)."""
    from kdrun.jobs.sweep_recorder import SweepRecorder

    sweep, num = arguments
    SweepRecorder().on_job_end(config=job_config(Path(sweep), num), job_return=FakeJobReturn(None))


def wandb_log_records(run_folder: Path) -> list:
    """The records of an offline wandb run (its run-*.wandb: a LevelDB-style log of protobuf records), complete.

    wandb's service writes the log in its own process and may still hold the tail after `finish()` returns;
    `wandb.teardown()` stops the service, which closes (flushes) every log first. A log without its `exit`
    record fails here rather than as a missing key further on."""
    import wandb
    from wandb.proto import wandb_internal_pb2

    wandb.teardown()
    path = next(run_folder.glob("run-*.wandb"))
    data = path.read_bytes()
    header = 7  # "W&B" magic, a 2-byte version, 2-byte (zero) padding
    block_size, position, payload, records = 32 * 1024, header, b"", []
    while position + 7 <= len(data):
        if block_size - position % block_size < 7:  # a block's tail too short for a chunk header
            position += block_size - position % block_size
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        payload += chunk
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
        elif kind == 2:  # the first chunk of a record split across blocks
            payload = chunk
    kinds = [record.WhichOneof("record_type") for record in records]
    assert "exit" in kinds, f"{path} ends before its exit record ({len(data)} bytes, last records {kinds[-3:]})"
    return records


def wandb_log_bytes(run_folder: Path) -> bytes:
    """An offline wandb run's whole log as bytes (keys and names appear verbatim in its protobuf records)."""
    wandb_log_records(run_folder)  # flushed and complete
    return next(run_folder.glob("run-*.wandb")).read_bytes()


def wandb_runs_in_start_order(wandb_dir: Path) -> list[Path]:
    """The offline run folders under a wandb/ directory, by their runs' start times (folder names carry whole
    seconds only: a teacher and its student may start within one)."""
    def started(folder: Path) -> float:
        run = next(r.run for r in wandb_log_records(folder) if r.WhichOneof("record_type") == "run")
        return run.start_time.ToNanoseconds()
    return sorted(wandb_dir.glob("offline-run-*"), key=started)
