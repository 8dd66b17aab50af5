"""The view cache: the same KD loss as the online teacher on the same views, shared by concurrent students without
corruption, damaged rows detected and recomputed, chosen automatically under finite-view augmentation."""

from __future__ import annotations

import errno
import multiprocessing
import os

import pytest
import torch

from support import AUGMENTED_CIFAR, compose_config, run_in_process
from kdrun.config.seeds import resolve_seeds
from kdrun.data.datamodule import DataSplits
from kdrun.engine.loss_schedule import build_schedule
from kdrun.engine.module import DistillationModule
from kdrun.errors import ConfigError
from kdrun.models import build_model
import kdrun.teachers.view_cache as view_cache_module
from kdrun.teachers.view_cache import ViewCache, view_cache_applies

RUN = AUGMENTED_CIFAR


def _run(tmp_path, cifar_root, overrides=(), name="run"):
    return run_in_process(tmp_path, [*RUN, f"data.root={cifar_root}", *overrides], name=name, quick=False)


def _table(folder, samples=40, views=18, classes=5, dtype=torch.float32, writable=True):
    identity = {"test": "table", "samples": samples, "views": views, "dtype": str(dtype)}
    return ViewCache.open(folder, identity, samples, views, classes, dtype, writable)


def _rows(index: torch.Tensor, views: torch.Tensor, classes: int = 5) -> torch.Tensor:
    # a deterministic stand-in for the teacher: every (sample, view) has its own row
    return (index[:, None] * 1000 + views[:, None] * 10 + torch.arange(classes)).float() / 7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_view_cached_kd_loss_equals_the_online_loss_on_the_same_views(tmp_path, cifar_root, dtype):
    cfg = compose_config(tmp_path, [*RUN, f"data.root={cifar_root}"])
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher.model, splits.source.input_shape, role="teacher").eval()
    student = build_model(cfg.student.model, splits.source.input_shape, role="student")
    schedule = build_schedule(cfg.schedule, cfg.loss, total_steps=10)
    cache = ViewCache.open(tmp_path / "entry", {"test": str(dtype)}, len(splits.source.train), splits.views.count,
                           splits.num_classes, dtype, writable=True)
    module = lambda **views: DistillationModule(student, teacher, schedule, cfg.student.optimizer,  # noqa: E731
                                                splits.num_classes, "student", **views)
    online, cached = module(), module(view_cache=cache, view_stream=splits.view_stream(3))
    x, y, index = next(iter(splits.training_loader("student", order_seed=3, batch_size=16)))
    logits = student(x)
    online_loss, _, _ = schedule(0, logits, online.teacher_logits(x, index), (x, y, index))
    first, _, _ = schedule(0, logits, cached.teacher_logits(x, index), (x, y, index))  # computed and written
    assert cache.counters.computed == 16 and cache.counters.written == 16 and cache.counters.hits == 0
    second, _, _ = schedule(0, logits, cached.teacher_logits(x, index), (x, y, index))  # read back
    assert cache.counters.hits == 16 and cache.counters.computed == 16
    assert torch.equal(first, second)  # a row gives the same value whether computed now or read back
    relative = float(((second - online_loss).abs() / online_loss.abs()).detach())
    # float32: rounding only; float16 moves the loss by ~1e-4 relative (measured here: what teacher.cache_dtype says)
    assert relative < (1e-6 if dtype == torch.float32 else 2e-3), relative


def test_rows_are_written_once_and_read_back_across_openings(tmp_path):
    cache = _table(tmp_path)
    index, views = torch.tensor([0, 5, 39]), torch.tensor([0, 17, 3])
    cache.store(index, views, _rows(index, views))
    cache.close()
    again = _table(tmp_path)
    values, found = again.lookup(torch.tensor([5, 6, 39]), torch.tensor([17, 17, 3]))
    assert found.tolist() == [True, False, True]
    torch.testing.assert_close(values[[0, 2]], _rows(torch.tensor([5, 39]), torch.tensor([17, 3])))
    assert again.fill_ratio() == pytest.approx(3 / (40 * 18))
    # another identity (other weights or dtype) is another table
    assert _table(tmp_path, dtype=torch.float16).fill_ratio() == 0


def _fill_rows(folder: str, seed: int, barrier) -> None:
    """A student: looks rows up, computes the missing ones and writes them (overlapping the other student's)."""
    generator = torch.Generator().manual_seed(seed)
    cache = _table(folder)
    barrier.wait()
    for _ in range(60):
        index, views = torch.randint(0, 40, (32,), generator=generator), torch.randint(0, 18, (32,), generator=generator)
        values, found = cache.lookup(index, views)
        missing = ~found
        cache.store(index[missing], views[missing], _rows(index[missing], views[missing]))
    cache.close()


def test_two_concurrent_students_fill_one_cache_consistently(tmp_path):
    context = multiprocessing.get_context("fork")  # no re-import of torch: seconds, not tens
    barrier = context.Barrier(2)
    workers = [context.Process(target=_fill_rows, args=(str(tmp_path), seed, barrier)) for seed in (1, 2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    cache = _table(tmp_path, writable=False)
    index = torch.arange(40).repeat_interleave(18)
    views = torch.arange(18).repeat(40)
    values, found = cache.lookup(index, views)
    assert found.float().mean() > 0.9  # 3,840 draws over 720 rows: nearly all present
    assert cache.counters.recomputed == 0  # no torn or mixed row
    torch.testing.assert_close(values[found], _rows(index, views)[found], rtol=0, atol=0)


def test_a_corrupted_row_is_detected_and_recomputed(tmp_path):
    cache = _table(tmp_path)
    index, views = torch.tensor([3, 4]), torch.tensor([2, 2])
    cache.store(index, views, _rows(index, views))
    row = 3 * 18 + 2
    with open(cache.folder / "logits.bin", "r+b") as handle:  # one value changed in place, at the same size
        handle.seek(row * cache.row_bytes + 4)
        handle.write(b"\x00\x00\x80\x7f")
    calls = []

    def teacher(x):
        calls.append(len(x))
        return _rows(index, views)[:1]

    logits = cache.teacher_logits(torch.zeros(2, 1), index, views, teacher)
    assert cache.counters.recomputed == 1 and calls == [1]  # only the damaged row ran the teacher
    torch.testing.assert_close(logits, _rows(index, views))
    values, found = _table(tmp_path).lookup(index, views)  # rewritten: intact again
    assert found.all()
    torch.testing.assert_close(values, _rows(index, views))


def test_a_run_uses_the_view_cache_and_a_second_student_reads_what_the_first_computed(tmp_path, cifar_root, caplog):
    with caplog.at_level("INFO", logger="kdrun"):
        first, _ = _run(tmp_path, cifar_root, name="first")
    summary = next(record.getMessage() for record in caplog.records if "teacher outputs  " in record.getMessage())
    assert summary.startswith("  teacher outputs  view cache, ") and "% of the views filled (" in summary
    assert first["teacher/outputs"] == "view cache" and first["teacher/view_cache_writable"] is True
    steps_samples = 2 * first["student/train_size"]  # every training sample once per epoch
    assert first["teacher/view_cache_computed"] + first["teacher/view_cache_hits"] == steps_samples
    assert first["teacher/view_cache_written"] == first["teacher/view_cache_computed"] > 0
    second, _ = _run(tmp_path, cifar_root, ["loss.temperature=2"], name="second")  # the same seed: the same views
    assert second["teacher/view_cache_hits"] == steps_samples and second["teacher/view_cache_computed"] == 0
    assert second["teacher/view_cache_fill"] == first["teacher/view_cache_fill"] > 0
    # a student of another seed meets other views: it computes some, and never more than it trains on
    third, _ = _run(tmp_path, cifar_root, ["seed=1"], name="third")
    assert 0 < third["teacher/view_cache_computed"] <= steps_samples
    assert len(list((tmp_path / "teacher_store").rglob("digests.bin"))) == 1  # one table per teacher and dtype


@pytest.mark.slow  # two runs; the batch-level equality above is in the default suite
def test_the_online_teacher_gives_the_same_student_as_the_view_cache(tmp_path, cifar_root):
    cached, _ = _run(tmp_path, cifar_root, name="cached")
    online, _ = _run(tmp_path, cifar_root, ["teacher.cache_outputs=false"], name="online")
    assert online["teacher/outputs"] == "online" and "teacher/view_cache_fill" not in online
    assert online["student/batch_order_checksum"] == cached["student/batch_order_checksum"]
    assert online["student/test/acc"] == pytest.approx(cached["student/test/acc"], abs=1e-9)
    assert online["student/test/nll"] == pytest.approx(cached["student/test/nll"], rel=1e-4)


def _read_only_view_caches(monkeypatch):
    """What a read-only mount of the store gives: creating the table, or opening it for writing, fails with EROFS."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if "view_cache" in str(path) and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def create(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", "view_cache")

    monkeypatch.setattr(view_cache_module.os, "open", guarded)
    monkeypatch.setattr(ViewCache, "_create", staticmethod(create))


@pytest.mark.slow  # four runs: the optional `pytest -m slow` job
def test_a_read_only_store_serves_the_view_cache_it_has_or_runs_the_teacher_online(tmp_path, cifar_root, caplog,
                                                                                   monkeypatch):
    _run(tmp_path, cifar_root, ["teacher.cache_outputs=false"], name="train_teacher")  # the entry, no view cache
    with monkeypatch.context() as patched:
        _read_only_view_caches(patched)
        without, _ = _run(tmp_path, cifar_root, name="without")
    assert without["teacher/outputs"] == "online"
    assert "holds no view cache; the teacher runs online" in caplog.text
    filled, _ = _run(tmp_path, cifar_root, name="filled")  # writable again: the table is made and partly filled
    digests = next((tmp_path / "teacher_store").rglob("digests.bin"))
    before = digests.read_bytes()
    with monkeypatch.context() as patched:
        _read_only_view_caches(patched)
        reading, _ = _run(tmp_path, cifar_root, ["loss.temperature=2"], name="reading")
    assert reading["teacher/outputs"] == "view cache" and reading["teacher/view_cache_writable"] is False
    assert reading["teacher/view_cache_hits"] > 0 and reading["teacher/view_cache_written"] == 0
    assert digests.read_bytes() == before  # nothing written
    assert "the view cache is read, and views it lacks are computed for this run only" in caplog.text


def test_selection_and_its_errors(tmp_path, cifar_root):
    cfg = compose_config(tmp_path, [*RUN, f"data.root={cifar_root}"])
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    schedule = build_schedule(cfg.schedule, cfg.loss, total_steps=10)
    assert view_cache_applies(cfg, schedule, splits) is True
    cfg.teacher.view_cache_max_gb = 0  # auto: over budget -> online
    assert view_cache_applies(cfg, schedule, splits) is False
    cfg.teacher.cache_outputs = True  # true: the budget does not stop it
    assert view_cache_applies(cfg, schedule, splits) is True
    cfg.teacher.view_cache_max_gb = -1
    with pytest.raises(ConfigError, match=r"teacher.view_cache_max_gb=-1.*allowed: a number >= 0"):
        view_cache_applies(cfg, schedule, splits)
    cfg.teacher.view_cache_max_gb = 16
    cfg.teacher.oracle = "bayes"
    with pytest.raises(ConfigError, match="cache_outputs=true.*no store entry"):
        view_cache_applies(cfg, schedule, splits)
    cfg.teacher.oracle = None
    cfg.teacher.cache_outputs = False
    assert view_cache_applies(cfg, schedule, splits) is False


@pytest.mark.slow  # three processes, one killed: the optional `pytest -m slow` job
def test_a_killed_augmented_run_resumes_with_the_same_views_and_ends_as_an_uninterrupted_run(tmp_path, cifar_root):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from support import kdrun_command, read_metrics

    run = [*RUN, f"data.root={cifar_root}", "student.epochs=6", "student.model.dropout=0.2",
           "trainer.enable_progress_bar=false"]
    env = {**os.environ, "KDRUN_OUTPUT_ROOT": str(tmp_path)}
    whole = kdrun_command([*run, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path, env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_dir = tmp_path / "killed"
    process = subprocess.Popen([str(Path(sys.executable).parent / "kdrun"), *run, f"hydra.run.dir={run_dir}"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = run_dir / "checkpoints" / "student" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (run_dir / "metrics.json").exists(), "killed too late to test a resume"
    again = kdrun_command([*run, f"hydra.run.dir={run_dir}"], tmp_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    expected, resumed = read_metrics(tmp_path / "whole"), read_metrics(run_dir)
    assert resumed["student/resumed_epochs"] >= 1 and resumed["teacher/outputs"] == "view cache"
    # the cache was warm for the resumed run (the uninterrupted one filled it): the views and the student are not
    for key in ("student/batch_order_checksum", "student/init_checksum", "student/test/acc", "student/test/nll",
                "student/train/acc"):
        assert resumed[key] == expected[key], key
