"""Cached teacher outputs: same loss as the online teacher, written once per store entry, never with augmentation."""

from __future__ import annotations

import pytest
import torch

import kdrun.teachers.cached_outputs as teacher_cache
from support import compose_config, run_in_process
from kdrun.data.datamodule import DataSplits
from kdrun.errors import ConfigError
from kdrun.models import build_model
from kdrun.engine.module import DistillationModule
from kdrun.engine.loss_schedule import build_schedule
from kdrun.config.seeds import resolve_seeds
from kdrun.teachers.store import TeacherResult


def _setup(tmp_path, overrides=()):
    cfg = compose_config(tmp_path, ["loss=kd", "loss.temperature=4", *overrides])
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher.model, splits.source.input_shape, role="teacher")
    student = build_model(cfg.student.model, splits.source.input_shape, role="student")
    schedule = build_schedule(cfg.schedule, cfg.loss, total_steps=10)
    return cfg, splits, teacher, student, schedule


def _module(cfg, splits, teacher, student, schedule, outputs):
    return DistillationModule(student, teacher, schedule, cfg.student.optimizer, splits.num_classes, "student",
                              teacher_outputs=outputs)


def test_cached_and_online_teacher_give_the_same_loss_on_a_batch(tmp_path):
    cfg, splits, teacher, student, schedule = _setup(tmp_path)
    # an imported teacher (no store key): the logits are cached for this run only
    cached = teacher_cache.teacher_outputs(cfg, splits, TeacherResult(teacher, "imported", None, tmp_path),
                                           teacher_cache.check_cache_config(cfg, schedule))
    assert cached is not None and cached.where == "run" and cached.logits["train"].dtype == torch.float32
    online = _module(cfg, splits, teacher, student, schedule, None)
    from_cache = _module(cfg, splits, teacher, student, schedule, cached.logits)
    x, y, index = next(iter(splits.training_loader("student", order_seed=3, batch_size=64)))
    batch = (x, y, index)
    logits = student(x)
    online_loss, _, _ = schedule(0, logits, online.teacher_logits(x, index), batch)
    cached_loss, _, _ = schedule(0, logits, from_cache.teacher_logits(x, index), batch)
    torch.testing.assert_close(cached_loss, online_loss, rtol=1e-5, atol=1e-6)
    # float16 storage would move the loss by orders of magnitude more than float32 rounding: why float32
    half_loss, _, _ = schedule(0, logits, cached.logits["train"].half().float()[index], batch)
    assert (half_loss - online_loss).abs() > (cached_loss - online_loss).abs()


def test_cache_is_written_once_per_store_entry_and_reused(tmp_path, tree_snapshot):
    first, out = run_in_process(tmp_path, name="first")
    assert first["teacher/outputs"] == "cached" and first["teacher/outputs_cache"] == "store"
    assert first["teacher/outputs_computed"] is True
    cache_files = list((tmp_path / "teacher_store").rglob(teacher_cache.CACHE_FILE))
    assert len(cache_files) == 1
    mtime = cache_files[0].stat().st_mtime_ns
    computed_before = teacher_cache.compute_count
    second, _ = run_in_process(tmp_path, ["loss.temperature=2"], name="second")
    assert second["teacher/outputs"] == "cached" and second["teacher/outputs_computed"] is False
    assert teacher_cache.compute_count == computed_before
    assert cache_files[0].stat().st_mtime_ns == mtime
    assert '"teacher/outputs": "cached"' in (out / "metrics.json").read_text()


def test_augmentation_forces_the_online_teacher(tmp_path):
    cfg, _, _, _, schedule = _setup(tmp_path)
    cfg.data.augment = "cifar_standard"  # the check reads the config only (digits itself refuses augmentation)
    assert teacher_cache.check_cache_config(cfg, schedule) is False  # auto: online
    cfg.teacher.cache_outputs = True
    with pytest.raises(ConfigError, match="augment=cifar_standard.*stale"):
        teacher_cache.check_cache_config(cfg, schedule)
    cfg.teacher.cache_outputs = "sometimes"
    with pytest.raises(ConfigError, match="allowed: auto, true, false"):
        teacher_cache.check_cache_config(cfg, schedule)


def test_cache_off_runs_the_teacher_online_and_says_so(tmp_path):
    metrics, _ = run_in_process(tmp_path, ["teacher.cache_outputs=false"])
    assert metrics["teacher/outputs"] == "online" and metrics["teacher/outputs_cache"] is None


def test_distill4_split_trains_from_cached_outputs(tmp_path):
    metrics, _ = run_in_process(tmp_path, ["data.split=distill4", "loss=kd", "loss.alpha=1.0"])
    assert metrics["teacher/outputs"] == "cached"
    assert 0.0 <= metrics["student/test/acc"] <= 1.0


def test_non_finite_loss_is_reported_with_its_step(tmp_path):
    from kdrun.errors import TrainingDiverged

    cfg, splits, teacher, student, schedule = _setup(tmp_path)
    module = _module(cfg, splits, teacher, student, schedule, None)
    module.divergence.first_step.fill_(7)
    module.divergence.value.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="student training diverged at step 7: the loss became non-finite"):
        module.sync_point()
