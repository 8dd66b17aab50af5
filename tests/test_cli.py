"""The installed `kdrun` command, run as a user would: help, config printing, presets, runs, sweeps."""

from __future__ import annotations

import json

import yaml

from support import QUICK, kdrun_command, read_metrics
from kdrun.config.tree import config_dir, group_options


def test_help_lists_groups_and_zoo_roles(tmp_path):
    result = kdrun_command(["--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for line in (f"loss: {', '.join(group_options('loss'))}", "schedule: constant, late_switch, phases",
                 f"experiment: {', '.join(group_options('experiment'))}"):
        assert line in result.stdout
    # both roles list the whole zoo, one entry per configs/model/*.yaml
    zoo = ", ".join(sorted(p.stem for p in (config_dir() / "model").glob("*.yaml")))
    assert f"teacher: {zoo}" in result.stdout and f"student: {zoo}" in result.stdout
    recipes = ", ".join(group_options("recipe"))
    assert f"teacher_recipe: {recipes}" in result.stdout and f"student_recipe: {recipes}" in result.stdout
    # the folders behind the roles are not groups of their own (`model=...` would be refused)
    assert "\nmodel: " not in result.stdout and "\nrecipe: " not in result.stdout
    assert "experiment/paper000: late_switch, late_switch_small" in result.stdout
    assert "Outputs go to outputs/runs" in result.stdout  # the footer, resolved against the config
    assert "\n  source: digits\n" in result.stdout  # the composed config


def test_help_shows_the_config_an_override_composes_and_refuses_bad_ones(tmp_path):
    result = kdrun_command(["data=cifar10", "--help", "loss.temperature=2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "\n  source: cifar10\n" in result.stdout and "\n  temperature: 2\n" in result.stdout
    bad = kdrun_command(["--help", "loss=nope"], cwd=tmp_path)
    assert bad.returncode == 2 and "Could not find 'loss/nope'" in bad.stderr and "kd_hard" in bad.stderr
    assert not (tmp_path / "outputs").exists()


def test_cfg_job_prints_the_composed_config_with_roles_swapped(tmp_path):
    result = kdrun_command(["--cfg", "job", "teacher=mlp", "student=cnn", "student.model.width=2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["teacher"]["model"]["name"] == "mlp"
    assert cfg["student"]["model"]["name"] == "cnn" and cfg["student"]["model"]["width"] == 2
    assert cfg["teacher"]["seed"] == 0  # the teacher's own settings survive the architecture choice
    assert not (tmp_path / "outputs").exists()


def test_experiment_preset_composes(tmp_path):
    result = kdrun_command(["experiment=late_switch_demo", "--cfg", "job"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["schedule"]["name"] == "late_switch" and cfg["schedule"]["window"] == 20
    assert cfg["loss"]["alpha"] == 1.0


def test_run_prints_summary_and_writes_run_directory(tmp_path):
    result = kdrun_command(["experiment=late_switch_demo", *QUICK], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "teacher: trained" in result.stdout
    assert "student-teacher agreement" in result.stdout
    (run_dir,) = list((tmp_path / "outputs" / "runs").iterdir())
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.json", "predictions.npz",
                 "kdrun.log", "logs/student/metrics.csv", "logs/teacher/metrics.csv"):
        assert (run_dir / name).exists(), name
    assert "teacher: trained" in (run_dir / "kdrun.log").read_text()


def test_bad_value_fails_with_a_clear_message_and_nonzero_exit(tmp_path):
    result = kdrun_command(["loss.alpha=2"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kdrun: invalid configuration: loss: kd.alpha=2 is outside [0, 1] (the teacher's weight in the mixture)"]
    assert not (tmp_path / "outputs" / "teacher_store").exists()
    # a single run records its status too (as every sweep job does)
    (run_dir,) = list((tmp_path / "outputs" / "runs").iterdir())
    recorded = json.loads((run_dir / "status.json").read_text())
    assert recorded["status"] == "failed" and "alpha=2" in recorded["error"]


def test_sweep_runs_six_jobs_and_trains_the_teacher_once(quick_sweep):
    result, root = quick_sweep  # kdrun -m loss=ce,kd seed=0,1,2 (conftest)
    assert result.returncode == 0, result.stderr
    (sweep,) = list((root / "sweeps").iterdir())
    runs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert len(runs) == 6
    metrics = [read_metrics(run) for run in runs]
    assert sorted(m["teacher/source"] for m in metrics) == ["reused"] * 5 + ["trained"]
    assert len({m["teacher/key"] for m in metrics}) == 1
    entries = [p for p in (root / "teacher_store").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(entries) == 1
    overrides = [yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) for run in runs]
    assert {tuple(sorted(o for o in ov if o.split("=")[0] in ("loss", "seed"))) for ov in overrides} == {
        (f"loss={loss}", f"seed={seed}") for loss in ("ce", "kd") for seed in (0, 1, 2)}
    json.dumps(metrics)  # every value is plain JSON
