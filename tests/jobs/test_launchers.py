"""Launch presets (hydra/launcher=slurm|local|joblib): composed values, real sweeps through the local
submitit executor and joblib's parallel workers with one shared teacher, and wandb grouping per sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from support import kdrun_command, read_metrics, wandb_log_records, wandb_runs_in_start_order
from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError
from kdrun.jobs.launchers import check_launcher_support
from kdrun.jobs.status import STATUS_FILE
from kdrun.jobs.sweep_recorder import read_summary

TINY = ["teacher.epochs=1", "student.epochs=1", "trainer.enable_progress_bar=false"]


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def only_sweep(root: Path) -> Path:
    (sweep,) = list((root / "outputs" / "sweeps").iterdir())
    return sweep


def store_entries(root: Path) -> list[Path]:
    return [p for p in (root / "outputs" / "teacher_store").iterdir() if p.is_dir() and not p.name.startswith(".")]


def check_sweep_shared_one_teacher(root: Path, jobs: int) -> list[dict]:
    sweep = only_sweep(root)
    metrics = [read_metrics(sweep / str(job)) for job in range(jobs)]
    for job, job_metrics in enumerate(metrics):
        assert job_metrics["student/test/acc"] > 0, job
        assert (sweep / str(job) / "student.pt").is_file()
    assert sorted(m["teacher/source"] for m in metrics) == ["reused"] * (jobs - 1) + ["trained"]
    assert len({m["teacher/key"] for m in metrics}) == 1
    assert len(store_entries(root)) == 1
    lines = read_summary(sweep)
    assert sorted(line["job"] for line in lines) == list(range(jobs))
    assert {line["status"] for line in lines} == {"completed"}
    return metrics


# --------------------------------------------------------------------------------------------
# hydra/launcher=slurm
# --------------------------------------------------------------------------------------------

def test_slurm_preset_takes_its_allocation_from_the_trainer(tmp_path):
    cfg = compose_with_hydra([
        "hydra/launcher=slurm", "trainer.devices=4", "++trainer.num_nodes=2", f"paths.output_root={tmp_path}",
        "hydra.launcher.partition=gpu", "hydra.launcher.account=kd-lab", "hydra.launcher.timeout_min=720"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # interpolated, so an override of the trainer moves the allocation with it
    assert OmegaConf.to_container(launcher)["tasks_per_node"] == "${trainer.devices}"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.nodes == 2
    assert (launcher.partition, launcher.account, launcher.timeout_min) == ("gpu", "kd-lab", 720)
    assert (launcher.mem_gb, launcher.cpus_per_task) == (32, 8)
    assert list(launcher.setup) == ["source .venv/bin/activate"]
    assert launcher.additional_parameters == {}
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"
    assert launcher.submitit_folder.startswith(f"{tmp_path}/sweeps/")

    # a trainer without num_nodes (or with its default) is one node
    default = compose_with_hydra(["hydra/launcher=slurm", "trainer.devices=2"])
    assert default.hydra.launcher.nodes == default.trainer.get("num_nodes", 1) == 1


def test_slurm_preset_becomes_the_sbatch_script_a_cluster_expects(tmp_path, monkeypatch):
    """The resolved preset goes through submitit exactly as the launcher passes it (no job is submitted)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine

    cfg = compose_with_hydra(["hydra/launcher=slurm", "trainer.devices=2", f"paths.output_root={tmp_path}",
                              "hydra.launcher.partition=gpu", "hydra.launcher.account=kd-lab",
                              "+hydra.launcher.additional_parameters.mail-type=FAIL"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    params.pop("_target_")
    executor = submitit.AutoExecutor(folder=params.pop("submitit_folder"), cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{key if key in shared else f"slurm_{key}": value for key, value in params.items()})
    script = executor._executor._make_submission_file_text("python -m job", "0")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=kd-lab", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --nodes=1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB",
                 "#SBATCH --time=240", "#SBATCH --mail-type=FAIL", "source .venv/bin/activate"):
        assert line in script, line


def test_a_sweep_over_device_counts_on_slurm_is_refused_before_submission(tmp_path):
    result = kdrun_command(["-m", "hydra/launcher=slurm", "trainer.devices=1,2"], cwd=tmp_path)
    assert result.returncode != 0
    assert "trainer.devices=1,2 under hydra/launcher=slurm" in result.stderr
    assert not list((tmp_path / "outputs" / "sweeps").glob("*/.submitit"))


# --------------------------------------------------------------------------------------------
# hydra/launcher=local (submitit's local executor: a process per job, all at once)
# --------------------------------------------------------------------------------------------

@pytest.mark.slow  # several processes or sweep jobs: the optional `pytest -m slow` job
def test_local_submitit_sweep_runs_every_job_and_trains_the_teacher_once(tmp_path):
    cfg = compose_with_hydra(["hydra/launcher=local"])
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
    assert cfg.hydra.launcher.tasks_per_node == 1

    # seed changes the student only: both concurrent jobs need the same teacher
    result = kdrun_command(["-m", "hydra/launcher=local", "seed=0,1", *TINY], cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = check_sweep_shared_one_teacher(tmp_path, jobs=2)
    assert metrics[0]["seeds/init"] != metrics[1]["seeds/init"]
    sweep = only_sweep(tmp_path)
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # each job's own log, beside the results
    assert all((sweep / str(job) / STATUS_FILE).is_file() for job in range(2))


# --------------------------------------------------------------------------------------------
# hydra/launcher=joblib (parallel worker processes on one machine)
# --------------------------------------------------------------------------------------------

def test_joblib_preset_replaces_the_plugin_defaults():
    launcher = compose_with_hydra(["hydra/launcher=joblib"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert (launcher.n_jobs, launcher.backend, launcher.prefer) == (2, "loky", "processes")


@pytest.mark.slow  # several processes or sweep jobs: the optional `pytest -m slow` job
def test_parallel_joblib_jobs_train_the_shared_teacher_exactly_once(tmp_path):
    # three jobs on two workers: both start together and race for the teacher; one worker is reused
    result = kdrun_command(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2", *TINY],
                           cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    check_sweep_shared_one_teacher(tmp_path, jobs=3)


@pytest.mark.parametrize("overrides, expected", [
    (["data.num_workers=2"], "data.num_workers=2 under hydra/launcher=joblib"),
    (["trainer.devices=2"], "multi-process training cannot start inside joblib's workers"),
])
def test_joblib_refuses_what_its_workers_cannot_run(overrides, expected):
    cfg = compose_with_hydra(["hydra/launcher=joblib", *overrides])
    with pytest.raises(ConfigError, match=expected):
        check_launcher_support(cfg, cfg.hydra)
    check_launcher_support(compose_with_hydra(overrides), compose_with_hydra(overrides).hydra)  # fine elsewhere


# --------------------------------------------------------------------------------------------
# wandb: offline without a key, one group per sweep, a job type per stage
# --------------------------------------------------------------------------------------------

@pytest.mark.slow  # several processes or sweep jobs: the optional `pytest -m slow` job
def test_wandb_runs_of_a_sweep_share_one_group_with_a_job_type_per_stage(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": None, "WANDB_MODE": None, "WANDB_DIR": None}
    # different teacher seeds: each job trains its own teacher, so each has a teacher and a student run
    result = kdrun_command(["-m", "logger=wandb", "teacher.seed=0,1", *TINY], cwd=tmp_path, env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = only_sweep(tmp_path)
    for job in ("0", "1"):
        runs = wandb_runs_in_start_order(sweep / job / "wandb")  # offline: no key, no network
        assert len(runs) == 2, runs
        records = [next(r.run for r in wandb_log_records(run) if r.WhichOneof("record_type") == "run") for run in runs]
        assert [record.job_type for record in records] == ["teacher", "student"]  # started in this order
        assert {record.run_group for record in records} == {sweep.name}
        assert [record.display_name for record in records] == [f"{job}-teacher", f"{job}-student"]
