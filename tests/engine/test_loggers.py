"""Loggers: wandb runs offline without an API key, one run per stage, grouped; mode selection."""

from __future__ import annotations

from omegaconf import OmegaConf

from support import run_in_process, wandb_log_bytes, wandb_runs_in_start_order
from kdrun.engine.loggers import wandb_mode


def test_wandb_logger_writes_offline_runs_for_both_stages(tmp_path, monkeypatch):
    # in this process (the command's own wandb path is the same pipeline); no key: offline, as on a fresh machine
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(variable, raising=False)
    _, run_dir = run_in_process(tmp_path, ["logger=wandb"], name="wandb_grouped_run")
    runs = wandb_runs_in_start_order(run_dir / "wandb")
    assert len(runs) == 2, runs  # teacher and student are separate runs
    logs = [wandb_log_bytes(run) for run in runs]
    teacher_log, student_log = logs  # started in this order
    group = run_dir.name.encode()
    assert group in teacher_log and group in student_log  # grouped by the run (or sweep) directory
    assert b"teacher" in teacher_log and b"student" in student_log  # job types
    assert b"val/acc" in teacher_log
    assert b"train/loss" in student_log and b"student/test/acc" in student_log  # step metrics and summary
    assert b"temperature" in student_log  # the resolved config is attached
    # the run's figures are drawn into the run directory and logged as images to the student's run
    assert (run_dir / "figures" / "reliability_test.png").is_file()
    assert b"figures/reliability_test" in student_log and b"figures/phi_scatter_train" in student_log
    media = sorted(p.name.split("_")[0] for p in (runs[1] / "files" / "media" / "images" / "figures").glob("*.png"))
    assert media == ["phi", "reliability"], media


def test_wandb_mode_defaults_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = OmegaConf.create({"mode": None})
    assert wandb_mode(cfg) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(cfg) == "online"
    assert wandb_mode(OmegaConf.create({"mode": "disabled"})) == "disabled"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode(cfg) == "online"
