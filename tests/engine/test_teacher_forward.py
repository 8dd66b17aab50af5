"""One rule for the teacher's numerics: the online forward pass and the cached logits compute the teacher the
same way, float32 by default (also inside a student stage under bf16 autocast) or bf16 when asked."""

from __future__ import annotations

import pytest
import torch

from support import compose_config, run_in_process

from kdrun.config.validate import validate_config
from kdrun.data.datamodule import DataSplits
from kdrun.engine.loss_schedule import LossSchedule, PhaseSpec
from kdrun.engine.module import DistillationModule
from kdrun.engine.teacher_forward import teacher_forward
from kdrun.errors import ConfigError
from kdrun.models import build_model
from kdrun.teachers.cached_outputs import compute_logits


def _teacher_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model({"name": "mlp", "num_classes": 10, "depth": 2, "width": 64, "activation": "relu",
                         "dropout": 0.0}, (1, 8, 8), "teacher").eval()
    return model, torch.randn(32, 1, 8, 8)


def test_float32_teacher_ignores_a_surrounding_bf16_autocast():
    model, x = _teacher_and_batch()
    with torch.no_grad():
        plain = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what a bf16-mixed student stage runs under
            unguarded = model(x).float()
            guarded = teacher_forward(model, x, "float32")
    assert guarded.dtype == torch.float32 and torch.equal(guarded, plain)
    assert not torch.equal(unguarded, plain)  # without the rule the teacher would silently run in bf16


def test_bf16_teacher_runs_under_autocast_and_returns_float32():
    model, x = _teacher_and_batch()
    with torch.no_grad():
        plain = model(x)
        bf16 = teacher_forward(model, x, "bf16")
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, plain)
    assert torch.allclose(bf16, plain, atol=0.1, rtol=0.05)  # bf16 rounding, not another function


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_cached_and_online_teacher_logits_are_equal_in_either_precision(tmp_path, precision):
    cfg = compose_config(tmp_path, ["teacher=mlp", f"teacher.precision={precision}"])
    checked = validate_config(cfg)
    splits = DataSplits.build(cfg.data, checked.seeds)
    model, _ = _teacher_and_batch()
    cached = compute_logits(model, splits, torch.device("cpu"), precision)
    schedule = LossSchedule([PhaseSpec({"name": "kd", "alpha": 1.0, "temperature": 2.0, "t_squared": True},
                                       None, 0, "loss")], total_steps=1)
    module = DistillationModule(build_model(cfg.student.model, (1, 8, 8), "student"), model, schedule,
                                cfg.student.optimizer, 10, "student", teacher_precision=precision)
    x, _, index = next(iter(splits.loader("train", batch_size=64)))
    assert torch.equal(module.teacher_logits(x, index), cached["train"][index])


def test_a_cache_made_in_another_precision_is_recomputed_and_the_run_records_it(tmp_path, shared_store):
    from kdrun.teachers import cached_outputs

    first, _ = run_in_process(tmp_path, name="float32", store=shared_store)
    computed = cached_outputs.compute_count
    again, _ = run_in_process(tmp_path, name="again", store=shared_store)
    assert cached_outputs.compute_count == computed and not again["teacher/outputs_computed"]  # reused
    bf16, _ = run_in_process(tmp_path, ["teacher.precision=bf16"], name="bf16", store=shared_store)
    assert bf16["teacher/key"] == first["teacher/key"]  # the same stored teacher ...
    assert bf16["teacher/outputs_computed"] and cached_outputs.compute_count == computed + 1  # ... recomputed
    assert (first["teacher/precision"], bf16["teacher/precision"]) == ("float32", "bf16")


def test_an_unknown_teacher_precision_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher.precision='fp8' is unknown; allowed: float32, bf16"):
        validate_config(compose_config(tmp_path, ["teacher.precision=fp8"]))
