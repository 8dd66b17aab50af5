"""`kdrun -m hydra/launcher=packed ...` as Hydra's application, in this process: every member through Hydra's
per-job machinery, the same run directory as a separate run, jobs that cannot pack run alone."""

from __future__ import annotations

import json
import sys

import pytest

from support import read_metrics, wandb_log_bytes

from kdrun.jobs.sweep_recorder import read_summary

SMALL = ["teacher=mlp", "teacher.model.width=32", "teacher.epochs=1", "data.teacher_size=256", "data.batch_size=32",
         "student.model.width=32", "student.epochs=2", "trainer.enable_progress_bar=false"]


def kdrun_main(monkeypatch, arguments: list[str]):
    from kdrun.cli import main

    monkeypatch.setattr(sys, "argv", ["kdrun", *arguments])
    return main()


def test_a_packed_sweep_writes_every_run_directory(tmp_path, shared_store, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exit_:  # a sweep with failed jobs exits 1 once every job has run
        kdrun_main(monkeypatch, ["-m", "hydra/launcher=packed", f"hydra.sweep.dir={sweep}",
                                 f"paths.output_root={tmp_path}", f"teacher.store={shared_store}", *SMALL, "seed=1",
                                 "loss=ce,kd", "student.optimizer.lr=0.003,1e8"])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "pack of 4 students (0, 1, 2, 3): one fit in" in out
    summary = {line["job"]: line for line in read_summary(sweep)}  # the sweep recorder saw every job once
    assert sorted(summary) == list(range(4))
    for job, line in summary.items():
        run_dir = sweep / str(job)
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        status = json.loads((run_dir / "status.json").read_text())
        if "lr=0.003" not in overrides:  # the diverging members fail alone, each with its own reason
            assert line["status"] == "failed" and "diverged" in line["error"]
            assert status["status"] == "failed" and "diverged" in json.dumps(status)
            assert not (run_dir / "metrics.json").exists()
            continue
        assert line["status"] == "completed" and status["status"] == "completed"
        for name in ("metrics.json", "predictions.npz", "per_sample.csv", "student.pt", "kdrun.log",
                     "logs/student/metrics.csv", ".hydra/config.yaml"):
            assert (run_dir / name).is_file(), name
        metrics = read_metrics(run_dir)
        assert metrics["pack/size"] == 4 and metrics["pack/members"] == "0,1,2,3"
        assert metrics["student/val/acc"] == pytest.approx(line["objective"])
        log = (run_dir / "kdrun.log").read_text()
        assert "teacher outputs: cached" in log and "done in" in log  # prepared and finished in its own log
    assert sum(line["status"] == "completed" for line in summary.values()) == 2
    # a member equals the job run alone, through the same command
    kdrun_main(monkeypatch, [f"hydra.run.dir={tmp_path / 'alone'}", f"paths.output_root={tmp_path}",
                             f"teacher.store={shared_store}", *SMALL, "seed=1", "loss=kd", "student.optimizer.lr=0.003"])
    packed = next(read_metrics(sweep / str(job)) for job, line in summary.items()
                  if {"loss=kd", "student.optimizer.lr=0.003"} <= set(line["overrides"]))
    alone = read_metrics(tmp_path / "alone")
    for key in ("student/init_checksum", "student/batch_order_checksum"):
        assert packed[key] == alone[key]
    assert packed["student/test/acc"] == pytest.approx(alone["student/test/acc"], abs=1e-4)


@pytest.mark.slow  # three sweeps; the grouping and the budget split are tested alone in tests/jobs/test_packing.py
def test_jobs_that_cannot_pack_run_alone_and_budgets_split_packs(tmp_path, shared_store, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    kdrun_main(monkeypatch, ["-m", "hydra/launcher=packed", "hydra.launcher.max_pack_size=2",
                             f"hydra.sweep.dir={sweep}", f"paths.output_root={tmp_path}", f"teacher.store={shared_store}",
                             *SMALL, "seed=0,1,2", "student.model.activation=relu,tanh", "student.epochs=1"])
    out = capsys.readouterr().out
    assert out.count("pack of 2 students") == 2  # relu: jobs 0, 2, 4 -> a pack of 2 and one alone; same for tanh
    assert "runs alone" in out
    assert all(read_metrics(sweep / str(job)).get("pack/size", 1) in (1, 2) for job in range(6))
    assert sum("pack/size" in read_metrics(sweep / str(job)) for job in range(6)) == 4
    tiny = tmp_path / "tiny"
    kdrun_main(monkeypatch, ["-m", "hydra/launcher=packed", "hydra.launcher.memory_budget_gb=0.00001",
                             f"hydra.sweep.dir={tiny}", f"paths.output_root={tmp_path}", f"teacher.store={shared_store}",
                             *SMALL, "seed=0,1", "student.epochs=1"])
    out = capsys.readouterr().out
    assert "over the budget of 0.00 GiB (hydra.launcher.memory_budget_gb): split into packs of 1, 1" in out
    assert all((tiny / str(job) / "metrics.json").is_file() for job in range(2))


def test_strict_packing_and_bad_options_stop_before_training(tmp_path, monkeypatch, capsys):
    base = ["-m", "hydra/launcher=packed", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.output_root={tmp_path}"]
    with pytest.raises(SystemExit) as exit_:
        kdrun_main(monkeypatch, [*base, "hydra.launcher.strict=true", "student=mlp,cnn"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "cannot train in one pack: they differ in student.model" in err and "'mlp' vs 'cnn'" in err
    with pytest.raises(SystemExit) as exit_:
        kdrun_main(monkeypatch, [*base, "hydra.launcher.max_pack_size=0", "seed=0,1"])
    assert exit_.value.code == 2
    assert "hydra.launcher.max_pack_size=0; allowed" in capsys.readouterr().err
    assert not (tmp_path / "teacher_store").exists() and not list((tmp_path / "sweep").glob("*/metrics.json"))


def test_multi_device_jobs_are_refused_inside_a_packed_sweep(tmp_path, monkeypatch, capsys):
    """DDP cannot run inside a pack: such jobs run alone, where a sweep in this process refuses them."""
    with pytest.raises(SystemExit) as exit_:
        kdrun_main(monkeypatch, ["-m", "hydra/launcher=packed", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                                 f"paths.output_root={tmp_path}", "trainer.accelerator=cpu", "trainer.devices=2",
                                 "seed=0,1"])
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    assert "runs alone: trainer.devices=2 trainer.num_nodes=1: a pack trains on one device" in captured.out
    for job in range(2):
        status = json.loads((tmp_path / "sweep" / str(job) / "status.json").read_text())
        assert status["status"] == "failed" and status["error"].startswith("ConfigError: trainer.devices=2")
    assert not (tmp_path / "teacher_store").exists()


@pytest.mark.slow  # a process per submitted pack
def test_each_pack_is_one_submitit_job(tmp_path, shared_store, monkeypatch, capsys):
    """hydra.launcher.submit=local: the same machinery as slurm, one job (process) per pack."""
    sweep = tmp_path / "sweep"
    kdrun_main(monkeypatch, ["-m", "hydra/launcher=packed", "hydra.launcher.submit=local", f"hydra.sweep.dir={sweep}",
                             f"paths.output_root={tmp_path}", f"teacher.store={shared_store}", *SMALL, "seed=0,1",
                             "student.model.activation=relu,tanh"])
    assert "2 submitit local job(s), one per pack" in capsys.readouterr().out
    submitted = [folder for folder in (sweep / ".submitit").iterdir() if folder.name.isdigit()]
    assert len(submitted) == 2 and all(list(folder.glob("*_log.out")) for folder in submitted)
    members = {job: read_metrics(sweep / str(job))["pack/members"] for job in range(4)}
    assert members == {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}  # each activation its own pack, in its own job
    assert sorted(line["job"] for line in read_summary(sweep)) == [0, 1, 2, 3]


@pytest.mark.slow  # wandb runs and matplotlib's font cache in a new HOME
def test_each_member_logs_its_own_wandb_run(tmp_path, shared_store, monkeypatch):
    """logger=wandb: the members' runs are open at once, each with its own curves, in the sweep's group."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for variable in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(variable, raising=False)
    sweep = tmp_path / "sweep"
    kdrun_main(monkeypatch, ["-m", "hydra/launcher=packed", f"hydra.sweep.dir={sweep}", f"paths.output_root={tmp_path}",
                             f"teacher.store={shared_store}", *SMALL, "logger=wandb", "seed=0,1", "student.epochs=1"])
    for job in range(2):
        assert read_metrics(sweep / str(job))["pack/size"] == 2
        runs = [wandb_log_bytes(run) for run in (sweep / str(job) / "wandb").glob("offline-run-*")]
        students = [log for log in runs if f"{job}-student".encode() in log]  # job 0 also holds the teacher's run
        assert len(students) == 1, len(runs)
        log = students[0]
        assert sweep.name.encode() in log  # the sweep's group
        assert b"train/loss" in log and b"val/acc" in log and b"student/test/acc" in log


@pytest.mark.slow  # builds the wheel
def test_the_wheel_ships_the_launcher_in_hydras_namespace(tmp_path):
    import subprocess
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(root)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("kdrun-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hydra_plugins/kdrun_packed_launcher/packed_launcher.py" in names
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with the other plugins
    assert "kdrun/configs/train.yaml" in names
