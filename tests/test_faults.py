"""Fault injection: killed stages, resumes with a changed configuration, damaged store files, a
read-only store, a full disk, divergence, interrupts, a misspelled key, a damaged run in a report.

A run "killed" in-process raises right after an epoch checkpoint was written, which leaves the
run directory as kill -9 would (a checkpoint, no metrics.json); the slow tests at the end kill
real processes.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from support import compose_config, kdrun_command, read_metrics
from kdrun.teachers import cached_outputs as teacher_cache
from kdrun.errors import ConfigError, DiskFull, TrainingDiverged
from kdrun.pipeline import run
from kdrun.engine.resume import LAST, EpochCheckpoint, checkpoint_dir
from kdrun.teachers.store import WEIGHTS, file_sha256

# Small and quick: an MLP teacher, batches of 128 (11 steps an epoch), no CKA at evaluation.
LIGHT = ["teacher=mlp", "teacher.model.width=64", "data.batch_size=128", "evaluation.cka_samples=0"]
FAST = ["teacher.epochs=2", "student.epochs=2"]


def config(root: Path, overrides: list[str]):
    return compose_config(root, [*LIGHT, *overrides])


class Killed(Exception):
    """Stands in for kill -9 right after a stage wrote an epoch checkpoint."""


@pytest.fixture
def kill_after(monkeypatch):
    """arm(stage, epochs): the next fit of `stage` dies after its `epochs`-th checkpoint; returns disarm()."""
    original = EpochCheckpoint.on_train_epoch_end

    def arm(stage: str, epochs: int):
        def dying(self, trainer, pl_module):
            original(self, trainer, pl_module)
            if pl_module.stage == stage and trainer.current_epoch + 1 >= epochs:
                raise Killed(f"{stage} killed after epoch {epochs}")

        monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", dying)
        return lambda: monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", original)

    return arm


def entries(store: Path) -> list[str]:
    """The store's entries (folders), without staging or quarantine folders."""
    if not store.exists():
        return []
    return sorted(p.name for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def csv_rows(run_dir: Path, stage: str) -> list[dict]:
    with open(run_dir / "logs" / stage / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# resume belongs to one configuration
# ---------------------------------------------------------------------------------------------

def test_a_teacher_checkpoint_of_another_seed_is_refused_and_the_same_seed_resumes_exactly(tmp_path, kill_after):
    run_dir, store = tmp_path / "runs" / "R", tmp_path / "teacher_store"
    disarm = kill_after("teacher", 1)
    with pytest.raises(Killed):
        run(config(tmp_path, ["teacher.epochs=3", "teacher.seed=0", "student.epochs=1"]), run_dir)
    disarm()
    assert (checkpoint_dir(run_dir, "teacher") / LAST).is_file() and entries(store) == []

    with pytest.raises(ConfigError) as refused:
        run(config(tmp_path, ["teacher.epochs=3", "teacher.seed=7", "student.epochs=1"]), run_dir)
    message = str(refused.value)
    for fragment in ("teacher checkpoint (1 epochs done", "another configuration", "seed: 0 -> 7", "resume=never"):
        assert fragment in message
    assert entries(store) == [], "a refused resume must not train or publish a teacher"

    resumed = run(config(tmp_path, ["teacher.epochs=3", "teacher.seed=0", "student.epochs=1"]), run_dir)
    clean_root = tmp_path / "clean"
    clean = run(config(clean_root, ["teacher.epochs=3", "teacher.seed=0", "student.epochs=1"]),
                clean_root / "runs" / "c")
    assert resumed["teacher/key"] == clean["teacher/key"] and entries(store) == [resumed["teacher/key"]]
    assert (file_sha256(store / resumed["teacher/key"] / WEIGHTS)
            == file_sha256(clean_root / "teacher_store" / clean["teacher/key"] / WEIGHTS))
    assert resumed["teacher/test/acc"] == clean["teacher/test/acc"]


def test_a_student_checkpoint_of_another_loss_is_refused_until_resume_never(tmp_path, kill_after, tree_snapshot):
    run_dir = tmp_path / "runs" / "R"
    disarm = kill_after("student", 1)
    with pytest.raises(Killed):
        run(config(tmp_path, ["teacher.epochs=1", "student.epochs=3", "loss=kd"]), run_dir)
    disarm()
    before = tree_snapshot(tmp_path)
    with pytest.raises(ConfigError) as refused:
        run(config(tmp_path, ["teacher.epochs=1", "student.epochs=3", "loss=ce"]), run_dir)
    assert "student checkpoint (1 epochs done" in str(refused.value)
    assert "loss.name: 'kd' -> 'ce'" in str(refused.value) and "resume=never" in str(refused.value)
    assert tree_snapshot(tmp_path) == before, "a refused resume changed files"

    with pytest.raises(ConfigError, match=r"resume='sometimes'; allowed: auto, never"):
        run(config(tmp_path, ["teacher.epochs=1", "student.epochs=3", "loss=ce", "resume=sometimes"]), run_dir)
    fresh = run(config(tmp_path, ["teacher.epochs=1", "student.epochs=3", "loss=ce", "resume=never"]), run_dir)
    assert fresh["student/resumed_epochs"] == 0
    epochs = sorted({int(row["epoch"]) for row in csv_rows(run_dir, "student")})
    assert epochs == [0, 1, 2]
    assert all("train/ce/ce" in row for row in csv_rows(run_dir, "student")), "rows of the kd run were kept"


def test_a_resumed_run_logs_every_epoch_once_and_matches_an_uninterrupted_run(tmp_path, kill_after):
    overrides = ["teacher.epochs=1", "student.epochs=3", "student.model.dropout=0.2"]
    whole = run(config(tmp_path, overrides), tmp_path / "runs" / "whole")
    run_dir = tmp_path / "runs" / "R"
    disarm = kill_after("student", 2)
    with pytest.raises(Killed):
        run(config(tmp_path, overrides), run_dir)
    disarm()
    resumed = run(config(tmp_path, overrides), run_dir)
    assert resumed["student/resumed_epochs"] == 2
    assert resumed["student/test/acc"] == whole["student/test/acc"]
    assert resumed["student/batch_order_checksum"] == whole["student/batch_order_checksum"]
    expected, got = csv_rows(tmp_path / "runs" / "whole", "student"), csv_rows(run_dir, "student")
    steps = [row["step"] for row in got if row["train/loss"]]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    assert got == expected  # every epoch once, with the values an uninterrupted run logged


def test_an_unreadable_checkpoint_is_moved_aside_and_the_stage_starts_afresh(tmp_path, kill_after):
    run_dir = tmp_path / "runs" / "R"
    disarm = kill_after("student", 1)
    with pytest.raises(Killed):
        run(config(tmp_path, ["teacher.epochs=1", "student.epochs=2"]), run_dir)
    disarm()
    checkpoint = checkpoint_dir(run_dir, "student") / LAST
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    metrics = run(config(tmp_path, ["teacher.epochs=1", "student.epochs=2"]), run_dir)
    assert metrics["student/resumed_epochs"] == 0
    assert list(checkpoint.parent.glob(f"{LAST}.unreadable-*"))


# ---------------------------------------------------------------------------------------------
# the teacher store: cached outputs, read-only stores, corrupt entries
# ---------------------------------------------------------------------------------------------

def _store_entry(tmp_path: Path, metrics: dict) -> Path:
    return tmp_path / "teacher_store" / metrics["teacher/key"]


def test_cached_logits_changed_in_place_are_quarantined_and_recomputed(tmp_path, caplog):
    first = run(config(tmp_path, FAST), tmp_path / "runs" / "a")
    cache = _store_entry(tmp_path, first) / teacher_cache.CACHE_FILE
    payload = torch.load(cache, weights_only=True)
    raw = bytearray(cache.read_bytes())
    values = payload["logits"]["train"].contiguous().numpy().tobytes()
    position = raw.find(values[:64]) + 64
    raw[position:position + 4] = torch.tensor([123.0]).numpy().tobytes()  # same size, one logit changed
    cache.write_bytes(bytes(raw))
    assert torch.load(cache, weights_only=True)["logits"]["train"].ne(payload["logits"]["train"]).sum() == 1

    computed = teacher_cache.compute_count
    with caplog.at_level(logging.WARNING):
        second = run(config(tmp_path, FAST), tmp_path / "runs" / "b")
    assert teacher_cache.compute_count == computed + 1 and second["teacher/outputs_computed"]
    assert "does not match its recorded SHA-256" in caplog.text
    assert len(list((tmp_path / "teacher_store" / ".corrupt").glob("*teacher_logits*"))) == 1
    assert second["student/test/acc"] == first["student/test/acc"]  # the recomputed logits are the true ones


def test_a_read_only_store_without_cached_logits_serves_the_teacher_and_computes_them_for_the_run(
        tmp_path, monkeypatch, caplog):
    first = run(config(tmp_path, FAST), tmp_path / "runs" / "a")
    (_store_entry(tmp_path, first) / teacher_cache.CACHE_FILE).unlink()

    def read_only(self, *args, **kwargs):  # what a lock file on a read-only mount gives
        raise PermissionError(errno.EROFS, "Read-only file system", self.lock_file)

    monkeypatch.setattr(FileLock, "acquire", read_only)
    with caplog.at_level(logging.WARNING):
        second = run(config(tmp_path, FAST), tmp_path / "runs" / "b")
    assert second["teacher/source"] == "reused" and second["teacher/outputs_cache"] == "run"
    assert "computed for this run only" in caplog.text
    assert second["student/test/acc"] == first["student/test/acc"]
    assert not (_store_entry(tmp_path, first) / teacher_cache.CACHE_FILE).exists()


def test_a_read_only_store_without_the_teacher_stops_before_training(tmp_path, monkeypatch, tree_snapshot):
    import kdrun.teachers.store

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(kdrun.teachers.store.tempfile, "NamedTemporaryFile", denied)
    with pytest.raises(ConfigError, match=r"teacher.store=.* cannot be written .* holds no teacher"):
        run(config(tmp_path, FAST), tmp_path / "runs" / "a")
    assert not (tmp_path / "runs").exists() and entries(tmp_path / "teacher_store") == []


def test_a_corrupt_entry_is_reported_once_and_rebuilt(tmp_path, caplog):
    first = run(config(tmp_path, FAST), tmp_path / "runs" / "a")
    (_store_entry(tmp_path, first) / WEIGHTS).write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        second = run(config(tmp_path, FAST), tmp_path / "runs" / "b")
    assert second["teacher/source"] == "trained"
    assert caplog.text.count("is corrupt") == 1 and caplog.text.count("moved corrupt teacher entry") == 1


def test_an_imported_teacher_of_another_architecture_names_the_model_option(tmp_path):
    first = run(config(tmp_path, FAST), tmp_path / "runs" / "a")
    weights = _store_entry(tmp_path, first) / WEIGHTS  # an mlp
    with pytest.raises(ConfigError, match=r"does not fit the teacher architecture \(teacher=cnn\)"):
        run(config(tmp_path, [*FAST, "teacher=cnn", "teacher.model.width=0.25", f"teacher.checkpoint={weights}"]),
            tmp_path / "runs" / "b")
    assert not (tmp_path / "runs" / "b").exists()  # refused in preflight, before the run wrote anything
    with pytest.raises(ConfigError, match=r"teacher.oracle=bayes needs the exact p\*\(y\|x\)"):
        run(config(tmp_path, [*FAST, "teacher.oracle=bayes"]), tmp_path / "runs" / "c")
    assert not (tmp_path / "runs" / "c").exists()


# ---------------------------------------------------------------------------------------------
# a full disk
# ---------------------------------------------------------------------------------------------

def _disk_full_after_some_bytes(path, *args, **kwargs):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_checkpointing_names_the_directory_and_leaves_no_staging_file(tmp_path, monkeypatch):
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint",
                        lambda self, checkpoint, path, storage_options=None: _disk_full_after_some_bytes(path))
    run_dir = tmp_path / "runs" / "a"
    with pytest.raises(DiskFull, match=f"no space left on {checkpoint_dir(run_dir, 'teacher')}"):
        run(config(tmp_path, FAST), run_dir)
    assert leftovers(tmp_path) == [] and not (checkpoint_dir(run_dir, "teacher") / LAST).exists()


def test_a_full_disk_while_storing_the_teacher_leaves_no_staging_folder(tmp_path, monkeypatch):
    import kdrun.atomic_files
    import kdrun.teachers.store

    save = torch.save

    def torch_full(obj, path, *args, **kwargs):  # torch's own message for a full disk, for the store's weights
        if not str(path).endswith(WEIGHTS):
            return save(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(kdrun.teachers.store.torch, "save", torch_full)
    monkeypatch.setattr(kdrun.atomic_files.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 0))
    with pytest.raises(DiskFull, match=f"no space left on {tmp_path / 'teacher_store'}"):
        run(config(tmp_path, FAST), tmp_path / "runs" / "a")
    assert leftovers(tmp_path) == [] and entries(tmp_path / "teacher_store") == []


# ---------------------------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("diverging")
    run(config(root, ["teacher.epochs=1", "student.epochs=1"]), root / "runs" / "first")
    return root


@pytest.mark.parametrize("lr, reason", [
    ("1e6", "exceeded 100 x its running minimum"),   # finite but exploding
    ("1e20", "the loss became non-finite"),
    ("1e38", "the optimiser's update overflowed"),
])
def test_a_diverging_student_fails_naming_the_stage_step_and_value(trained_store, lr, reason):
    cfg = config(trained_store, ["teacher.epochs=1", "student.epochs=1", f"student.optimizer.lr={lr}"])
    with pytest.raises(TrainingDiverged) as diverged:
        run(cfg, trained_store / "runs" / f"lr{lr}")
    assert diverged.value.stage == "student" and diverged.value.step >= 0
    assert str(diverged.value).startswith(f"student training diverged at step {diverged.value.step}: ")
    assert reason in str(diverged.value) and "loss " in str(diverged.value)
    assert not (trained_store / "runs" / f"lr{lr}" / "metrics.json").exists()


def test_the_growth_check_can_be_switched_off(trained_store):
    cfg = config(trained_store, ["teacher.epochs=1", "student.epochs=1", "student.optimizer.lr=1e6",
                                         "divergence.enabled=false"])
    metrics = run(cfg, trained_store / "runs" / "unguarded")
    assert metrics["student/test/acc"] < 0.5  # the finite blow-up runs to the end, as asked


def _guard(**settings):
    from kdrun.engine.divergence import DivergenceGuard, DivergenceSettings

    return DivergenceGuard("student", DivergenceSettings(**settings), sync_every=50)


def test_guard_resets_at_a_phase_change_and_pauses_in_blend_windows():
    converged, switched = [2.0] * 3 + [0.02] * 30, [30.0] * 30  # CE converges, then T^2-scaled KD starts
    same_phase = _guard(smoothing_steps=2)
    for step, loss in enumerate(converged + switched):
        same_phase.observe(step, torch.tensor(loss), phase=0)
    with pytest.raises(TrainingDiverged, match="exceeded 100 x"):
        same_phase.check()  # without the reset this is a false alarm: the point of the reset

    phased = _guard(smoothing_steps=2)
    for step, loss in enumerate(converged):
        phased.observe(step, torch.tensor(loss), phase=0)
    for step, loss in enumerate([5.0, 15.0, 25.0], start=len(converged)):
        phased.observe(step, torch.tensor(loss), phase=None)  # the blend window
    for step, loss in enumerate(switched, start=len(converged) + 3):
        phased.observe(step, torch.tensor(loss), phase=1)
    phased.check()
    for step in range(100, 110):
        phased.observe(step, torch.tensor(3e4), phase=1)  # a real blow-up inside the new phase
    with pytest.raises(TrainingDiverged, match="at step 10[0-9]"):
        phased.check()


def test_guard_non_finite_is_always_checked_and_bad_settings_are_config_errors():
    from kdrun.engine.divergence import DivergenceSettings

    guard = _guard(enabled=False)
    guard.observe(0, torch.tensor(1.0), phase=0)
    guard.observe(1, torch.tensor(1e9), phase=0)
    guard.check()  # growth check off
    guard.observe(2, torch.tensor(float("nan")), phase=0)
    with pytest.raises(TrainingDiverged, match="at step 2: the loss became non-finite"):
        guard.check()
    for bad, fragment in [({"factor": 1.0}, "divergence.factor=1.0"), ({"floor": -1}, "divergence.floor=-1"),
                          ({"smoothing_steps": 0}, "divergence.smoothing_steps=0"),
                          ({"enabled": "yes"}, "divergence.enabled='yes'"), ({"limit": 3}, "divergence.limit")]:
        with pytest.raises(ConfigError, match=fragment):
            DivergenceSettings.from_config(bad)


def test_a_diverging_run_exits_1_with_one_line_and_a_status_file(tmp_path):
    run_dir = tmp_path / "R"
    # the Bayes oracle of a synthetic source: no teacher to train before the student diverges
    result = kdrun_command(["data=gaussian_binary", "teacher=mlp", "teacher.oracle=bayes", "student.epochs=1",
                            "student.optimizer.lr=1e38", "trainer.enable_progress_bar=false",
                            f"hydra.run.dir={run_dir}"], tmp_path,
                           {"KDRUN_OUTPUT_ROOT": str(tmp_path)})
    assert result.returncode == 1, result.stderr[-2000:]
    assert "kdrun: student training diverged at step" in result.stderr and "Traceback" not in result.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("TrainingDiverged: student training diverged")


# ---------------------------------------------------------------------------------------------
# interrupts and configurations Hydra cannot compose
# ---------------------------------------------------------------------------------------------

def test_ctrl_c_inside_a_fit_surfaces_as_keyboard_interrupt(tmp_path, monkeypatch):
    original = EpochCheckpoint.on_train_epoch_end

    def pressed(self, trainer, pl_module):
        original(self, trainer, pl_module)
        raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", pressed)
    with pytest.raises(KeyboardInterrupt, match="teacher stage interrupted"):
        run(config(tmp_path, FAST), tmp_path / "runs" / "a")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning left it ignored


@pytest.mark.parametrize("bad", ["los=kd", "loss=nope", "student.optimizer.lrr=1"])
def test_a_config_hydra_cannot_compose_exits_2_with_a_status_file(tmp_path, bad):
    run_dir = tmp_path / "R"
    result = kdrun_command([bad, f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "invalid configuration" and bad.split("=")[0].split(".")[-1] in status["error"]


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

def test_report_lists_an_unreadable_and_a_failed_run_and_goes_on(tmp_path):
    from kdrun.report.collect import collect_runs

    for name, seed in (("good", 0), ("truncated", 1), ("failed", 2)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    (tmp_path / "good" / "metrics.json").write_text(json.dumps({"student/test/acc": 0.9}))
    (tmp_path / "truncated" / "metrics.json").write_text('{"student/test/acc": 0.')
    (tmp_path / "failed" / "status.json").write_text(json.dumps(
        {"status": "failed", "error": "TrainingDiverged: student training diverged at step 3"}))
    table = collect_runs([tmp_path]).set_index("seed")
    assert table.loc[0, "status"] == "ok" and table.loc[0, "student/test/acc"] == 0.9
    assert table.loc[1, "status"] == "unreadable" and "metrics.json is unreadable" in table.loc[1, "error"]
    assert table.loc[2, "status"] == "failed" and table.loc[2, "error"].startswith("TrainingDiverged")


# ---------------------------------------------------------------------------------------------
# real processes (the optional slow job)
# ---------------------------------------------------------------------------------------------

SLOW_RUN = ["teacher.epochs=4", "student.epochs=2", "trainer.enable_progress_bar=false"]


def _start(args: list[str], cwd: Path, env: dict, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "kdrun"), *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_during_the_teacher_then_another_seed_is_refused_and_the_same_seed_resumes(tmp_path):
    env = {**os.environ, "KDRUN_OUTPUT_ROOT": str(tmp_path)}
    run_dir = tmp_path / "R"
    process = _start([*SLOW_RUN, "teacher.seed=0", f"hydra.run.dir={run_dir}"], tmp_path, env)
    checkpoint = checkpoint_dir(run_dir, "teacher") / LAST
    _wait_for(checkpoint, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (run_dir / "metrics.json").exists(), "killed too late to test a resume"

    refused = kdrun_command([*SLOW_RUN, "teacher.seed=7", f"hydra.run.dir={run_dir}"], tmp_path, env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "teacher checkpoint" in refused.stderr and "seed: 0 -> 7" in refused.stderr
    assert "teacher:\n  seed: 0" in (run_dir / ".hydra" / "config.yaml").read_text(), ".hydra was not put back"
    assert entries(tmp_path / "teacher_store") == []

    again = kdrun_command([*SLOW_RUN, "teacher.seed=0", f"hydra.run.dir={run_dir}"], tmp_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming teacher from epoch" in again.stdout
    whole = kdrun_command([*SLOW_RUN, "teacher.seed=0", f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path,
                          {**env, "KDRUN_OUTPUT_ROOT": str(tmp_path / "other")})
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert read_metrics(run_dir)["teacher/test/acc"] == read_metrics(tmp_path / "whole")["teacher/test/acc"]
    assert read_metrics(run_dir)["student/test/acc"] == read_metrics(tmp_path / "whole")["student/test/acc"]


@pytest.mark.slow
def test_sigint_writes_an_interrupted_status_and_exits_130(tmp_path):
    env = {**os.environ, "KDRUN_OUTPUT_ROOT": str(tmp_path)}
    run_dir = tmp_path / "R"
    process = _start([*SLOW_RUN, "teacher.epochs=40", f"hydra.run.dir={run_dir}"], tmp_path, env, subprocess.PIPE)
    _wait_for(checkpoint_dir(run_dir, "teacher") / LAST, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"
    assert "kdrun: interrupted" in stderr


@pytest.mark.slow
def test_a_real_full_disk_stops_the_run_with_no_space_left_and_no_orphans(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        run_dir = disk / "R"
        result = kdrun_command([*SLOW_RUN, "teacher.epochs=1", "student=cnn", f"hydra.run.dir={run_dir}"], tmp_path,
                               {"KDRUN_OUTPUT_ROOT": str(disk)})
        assert result.returncode == 1, result.stderr[-2000:]
        assert "kdrun: no space left on" in result.stderr and "enforce fail" not in result.stderr
        assert leftovers(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_anywhere_in_the_run_is_reported_as_such(tmp_path):
    from kdrun.jobs.status import describe_disk_full

    error = describe_disk_full(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "logs" / "x.csv")),
                               tmp_path)
    assert isinstance(error, DiskFull) and str(error).startswith(f"no space left on {tmp_path / 'logs'}")
    other = ValueError("not a disk problem")
    assert describe_disk_full(other, tmp_path) is other
