"""Training recipes: optimisers, learning-rate schedules against their closed forms, budgets."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.engine.recipes import build_lr_scheduler, build_optimizer, check_recipe, lr_factor, plan_steps


def recipe(name: str):
    return OmegaConf.load(config_dir() / "recipe" / f"{name}.yaml")


def factors(schedule, steps_per_epoch, total_steps, steps):
    plan = plan_steps(schedule, steps_per_epoch, total_steps, "student")
    return [lr_factor(step, schedule, plan) for step in steps]


def test_paper000_cifar_warmup_then_step_decay_at_the_papers_steps():
    """48 steps/epoch x 450 epochs = 21,600 steps; warm-up 720 steps; decays at 9,600 / 14,400 / 19,200."""
    cfg = recipe("paper000_cifar")
    assert cfg.optimizer.nesterov and cfg.optimizer.lr == 1.0
    steps = [0, 359, 719, 720, 9599, 9600, 14399, 14400, 19199, 19200, 21599]
    expected = [1 / 720, 360 / 720, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert factors(cfg.lr_schedule, 48, 48 * 450, steps) == pytest.approx(expected)


def test_paper002_cifar100_divides_by_five_after_one_warmup_epoch():
    cfg = recipe("paper002_cifar100")
    spe = math.ceil(45_000 / 128)
    got = factors(cfg.lr_schedule, spe, 200 * spe, [0, spe - 1, 60 * spe - 1, 60 * spe, 120 * spe, 160 * spe])
    assert got == pytest.approx([1 / spe, 1.0, 1.0, 0.2, 0.04, 0.008])


def test_warmup_then_cosine_matches_the_closed_form():
    cfg = recipe("paper002_cifar10").lr_schedule
    spe, total = 100, 3000
    warmup = 5 * spe
    for step in (warmup, 1000, 1750, 2999):
        progress = (step - warmup) / (total - warmup)
        assert factors(cfg, spe, total, [step])[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * progress)))
    assert factors(cfg, spe, total, [1750])[0] == pytest.approx(0.5)  # half-way through the decay


def test_cosine_without_warmup_and_linear_decay_with_a_floor():
    cosine = OmegaConf.create({"name": "cosine", "warmup_epochs": 0, "final_lr_factor": 0.1})
    assert factors(cosine, 10, 100, [0, 50, 100]) == pytest.approx([1.0, 0.55, 0.1])
    linear = OmegaConf.create({"name": "linear", "warmup_steps": 10, "final_lr_factor": 0.0})
    assert factors(linear, 7, 110, [4, 9, 10, 60, 110]) == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    constant = OmegaConf.create({"name": "constant"})
    assert factors(constant, 7, 110, [0, 55, 109]) == [1.0, 1.0, 1.0]


def test_the_scheduler_sets_the_closed_form_rate_at_every_step():
    schedule = recipe("paper000_cifar").lr_schedule
    weight = torch.nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer(recipe("paper000_cifar").optimizer, [weight], "teacher")
    plan = plan_steps(schedule, 2, 900, "teacher")  # warm-up 30 steps, decays at 400/600/800
    scheduler = build_lr_scheduler(optimizer, schedule, plan)
    seen = []
    for step in range(900):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(1 / 30) and seen[29] == pytest.approx(1.0)
    assert seen[399] == pytest.approx(1.0) and seen[400] == pytest.approx(0.1) and seen[899] == pytest.approx(0.001)


def test_optimisers_and_the_weight_decay_exclusion():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    base = recipe("paper000_cifar").optimizer
    sgd = build_optimizer(base, model.parameters(), "teacher")
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and len(sgd.param_groups) == 1
    excluded = build_optimizer(OmegaConf.merge(base, {"decay_norm_and_bias": False}), model.parameters(), "teacher")
    decayed, plain = excluded.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([3, 4])] and decayed["weight_decay"] == 1e-4
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0  # bias, BN weight, BN bias
    adamw = build_optimizer(OmegaConf.merge(base, {"name": "adamw", "betas": [0.8, 0.9]}), model.parameters(), "x")
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.9)
    assert isinstance(build_optimizer(recipe("adam").optimizer, model.parameters(), "x"), torch.optim.Adam)


@pytest.mark.parametrize("optimizer,schedule,fragment", [
    ({"name": "lion"}, {}, "optimizer.name='lion'"),
    ({"name": "sgd", "momentum": 0.0, "nesterov": True}, {}, "nesterov=true needs momentum"),
    ({"lr": 0.0}, {}, "optimizer.lr=0.0"),
    ({}, {"name": "exponential"}, "lr_schedule.name='exponential'"),
    ({}, {"name": "step", "milestones": [30, 10]}, "must increase"),
    ({}, {"warmup_epochs": 50}, "longer than the training run"),
])
def test_bad_recipe_values_are_refused(optimizer, schedule, fragment):
    cfg = OmegaConf.merge(recipe("adam"), {"optimizer": optimizer, "lr_schedule": schedule})
    with pytest.raises(ConfigError, match=fragment):
        check_recipe(cfg, "student")  # the run's validation; the warm-up against the budget when planned
        plan = plan_steps(cfg.lr_schedule, 10, 200, "student")
        build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))], "student")
        assert plan


def test_every_recipe_file_lists_the_same_keys():
    keys = {name: set(OmegaConf.to_container(recipe(name)).keys())
            for name in (p.stem for p in (config_dir() / "recipe").glob("*.yaml"))}
    reference = keys.pop("adam")
    for name, found in keys.items():
        assert found == reference, name


# --- recipes inside runs ---------------------------------------------------------------------------

import csv  # noqa: E402

import yaml  # noqa: E402

from support import QUICK, compose_config, kdrun_command, run_in_process  # noqa: E402
from kdrun.engine.trainer import resolve_precision  # noqa: E402

SMALL = ["data=gaussian_binary", "data.n_train=200", "data.n_val=64", "data.n_test=100", "teacher=mlp",
         "student=mlp", "teacher.model.width=16", "student.model.width=16"]


def logged(run_dir, stage, column):
    with open(run_dir / "logs" / stage / "metrics.csv") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]


def test_teacher_and_student_choose_recipes_independently(tmp_path):
    cfg = compose_config(tmp_path, ["teacher_recipe=paper000_cifar", "student_recipe=paper003_svhn"], quick=False)
    assert cfg.teacher.optimizer.name == "sgd" and cfg.teacher.epochs == 450 and cfg.teacher.seed == 0
    assert cfg.student.optimizer.name == "adam" and cfg.student.epochs == 100 and cfg.student.init == "own"


def test_a_step_budget_and_the_logged_learning_rate_follow_the_recipe(tmp_path):
    """Teacher: SGD + cosine over 2 epochs of 4 steps; student: a budget of 7 steps with a linear decay
    after 2 warm-up steps, and a late switch at half of those 7 steps."""
    overrides = [*SMALL, "teacher_recipe=sgd_cosine", "teacher.epochs=2", "teacher.batch_size=50",
                 "student.max_steps=7", "student.lr_schedule.name=linear", "student.lr_schedule.warmup_steps=2",
                 "schedule=late_switch", "schedule.at=0.5"]
    metrics, out = run_in_process(tmp_path, overrides, quick=False)
    assert metrics["student/steps"] == 7 and len(logged(out, "student", "train/loss")) == 7
    expected = [(s + 1) / 2 if s < 2 else 1 - (s - 2) / 5 for s in range(7)]
    assert logged(out, "student", "train/lr") == pytest.approx([0.003 * f for f in expected])
    weights = logged(out, "student", "schedule/1_kd")
    assert weights == [0.0] * 4 + [1.0] * 3  # round(0.5 * 7) = 4: the switch lands inside the step budget
    teacher_lr = logged(out, "teacher", "train/lr")
    assert len(teacher_lr) == 8  # 200 samples / batch 50 = 4 steps a epoch, 2 epochs
    assert teacher_lr == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(8)])
    assert 0 <= metrics["student/val/acc"] <= 1 and "student/val/nll" in metrics


def test_drop_last_and_stage_batch_size_set_the_steps(tmp_path):
    metrics, _ = run_in_process(tmp_path, [*SMALL, "student.batch_size=64", "student.drop_last=true",
                                           "student.epochs=2"], quick=False)
    assert metrics["student/steps"] == 2 * (200 // 64)


def test_the_teacher_key_follows_the_teacher_recipe_only(tmp_path):
    first, _ = run_in_process(tmp_path, [*SMALL, *QUICK], name="a")
    student_change, _ = run_in_process(tmp_path, [*SMALL, *QUICK, "student.optimizer.lr=0.01"], name="b")
    teacher_change, _ = run_in_process(tmp_path, [*SMALL, *QUICK, "teacher.optimizer.lr=0.01"], name="c")
    assert student_change["teacher/key"] == first["teacher/key"] and student_change["teacher/source"] == "reused"
    assert teacher_change["teacher/key"] != first["teacher/key"] and teacher_change["teacher/source"] == "trained"


def test_gradient_clipping_and_precision_reach_the_trainer(tmp_path):
    from kdrun.data.datamodule import DataSplits
    from kdrun.engine.recipes import stage_budget
    from kdrun.engine.trainer import build_trainer as _trainer
    from kdrun.config.seeds import resolve_seeds

    cfg = compose_config(tmp_path, [*SMALL, "student.gradient_clip_val=0.5"])
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    trainer = _trainer(cfg, "student", stage_budget(cfg.student, splits, "student"), tmp_path, False)
    assert trainer.gradient_clip_val == 0.5
    assert resolve_precision("auto") == ("bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                         else "32-true")
    assert resolve_precision("16-mixed") == "16-mixed"


@pytest.mark.parametrize("overrides,fragment", [
    (["student.max_steps=0"], "student.max_steps=0"),
    (["teacher.batch_size=0"], "teacher.batch_size=0"),
    (["student.batch_size=5000", "student.drop_last=true"], "leaves no batch"),
    (["teacher.lr_schedule.name=exponential"], "teacher.lr_schedule.name='exponential'"),
])
def test_bad_budgets_stop_before_training(tmp_path, overrides, fragment):
    from kdrun.pipeline import run

    with pytest.raises(ConfigError, match=fragment):
        run(compose_config(tmp_path, [*SMALL, *overrides]), tmp_path / "run")
    assert not (tmp_path / "teacher_store").exists()


@pytest.mark.slow  # several processes or sweep jobs: the optional `pytest -m slow` job
def test_optuna_sweep_optimises_the_validation_objective(tmp_path):
    result = kdrun_command(["-m", "experiment=tune_student", "hydra.sweeper.n_trials=2", *SMALL, *QUICK,
                            "trainer.enable_progress_bar=false", f"paths.output_root={tmp_path / 'outputs'}"],
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep,) = list((tmp_path / "outputs" / "sweeps").iterdir())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [json_metrics["student/val/acc"] for json_metrics in
              (yaml.safe_load((sweep / str(job) / "metrics.json").read_text()) for job in (0, 1))]
    assert results["best_value"] == pytest.approx(max(values))
    assert set(results["best_params"]) == {"student.optimizer.lr", "loss.alpha", "loss.temperature"}


def test_validation_interval_skips_epochs_but_always_validates_the_last(tmp_path, shared_store):
    import csv

    metrics, out = run_in_process(tmp_path, ["student.epochs=3", "student.val_every_n_epochs=2",
                                             "teacher.val_every_n_epochs=5"], store=shared_store)
    with open(out / "logs" / "student" / "metrics.csv", newline="") as handle:
        validated = sorted({int(row["epoch"]) for row in csv.DictReader(handle) if row.get("val/acc")})
    assert validated == [1, 2]  # epoch 2 (the second) by the interval, epoch 3 (the last) always
    assert 0.0 <= metrics["student/val/acc"] <= 1.0  # what sweepers select on is there
    steps, _ = run_in_process(tmp_path, ["student.max_steps=25", "student.val_every_n_epochs=5"], name="steps",
                              store=shared_store)  # a step budget ends inside epoch 2: validated after the fit
    assert 0.0 <= steps["student/val/acc"] <= 1.0
    with pytest.raises(ConfigError, match=r"student.val_every_n_epochs=0 is too small"):
        run_in_process(tmp_path, ["student.val_every_n_epochs=0"], name="bad")
