"""Multi-process training: world size, process rank, supported launch combinations, rank agreement.

Lightning's `ddp` strategy re-runs the `kdrun` command for every rank > 0 (same argv plus
`hydra.run.dir`) when rank 0 reaches its first `fit`; under SLURM (tasks_per_node == devices)
or torchrun every rank is started at once by the cluster. Either way each rank runs the whole
pipeline, so everything before a `fit` must take the same path on every rank: the decisions
only rank 0 may make (train the teacher or reuse its store entry) are handed to the other
ranks through a small file in the run directory (`RankAgreement`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from kdrun.errors import ConfigError
from kdrun.config.checks import check_whole_number, fail, is_whole_number

log = logging.getLogger("kdrun")

LAUNCH_ID_VARIABLE = "KDRUN_LAUNCH_ID"  # set by rank 0, inherited by the ranks Lightning starts
AGREEMENT_DIR = ".kdrun_ranks"
AGREEMENT_TIMEOUT_S = 24 * 3600  # rank 0 may wait that long on another job's teacher lock


DEVICES_ALLOWED = ("a whole number >= 1, -1 or auto (every GPU; one process on a CPU), a list of device ids "
                   "such as [0, 1], or such a list as a string (\"0,1\")")


def training_world_size(trainer_cfg) -> int:
    """Processes that train together: devices per node x nodes, as Lightning will resolve them.
    Checks `trainer.devices` and `trainer.num_nodes` (the first place that reads them)."""
    devices = trainer_cfg.get("devices", 1)
    nodes = check_whole_number(trainer_cfg.get("num_nodes", 1), "trainer.num_nodes", minimum=1, allow_none=True) or 1
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        parts = [part.strip() for part in devices.split(",") if part.strip()]
        if not parts or not all(part.isdigit() for part in parts):
            fail("trainer.devices", devices, "is not a device count or list", DEVICES_ALLOWED)
        # as Lightning reads them: "2" is a count, "0,1" (or "1,") lists device ids
        devices = [int(part) for part in parts] if "," in devices else int(parts[0])
    if isinstance(devices, str) or (is_whole_number(devices) and devices == -1):
        return max(_gpu_count() if _accelerator(trainer_cfg) != "cpu" else 1, 1) * nodes
    if is_whole_number(devices):
        if devices < 1:
            fail("trainer.devices", devices, "asks for no device", DEVICES_ALLOWED)
        return int(devices) * nodes
    if isinstance(devices, Mapping) or not isinstance(devices, Sequence) or not devices:
        fail("trainer.devices", devices, "is not a device count or list", DEVICES_ALLOWED)
    for index, device in enumerate(devices):
        check_whole_number(device, f"trainer.devices[{index}]", minimum=0, meaning="a device id")
    return len(devices) * nodes


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _accelerator(trainer_cfg) -> str:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator == "auto":
        return "gpu" if _gpu_count() else "cpu"
    return accelerator


def externally_launched() -> str | None:
    """An id shared by all ranks of one launch when the cluster started them all (SLURM tasks,
    torchrun), None when Lightning starts ranks > 0 itself. A requeued job is a new launch."""
    env = os.environ
    if env.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}-{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        return f"slurm-{env['SLURM_JOB_ID']}-{env.get('SLURM_STEP_ID', '0')}-{env.get('SLURM_RESTART_COUNT', '0')}"
    return None


def process_rank() -> int:
    """This process's global rank, known before the first `fit` (from the launcher's variables)."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env.get("SLURM_PROCID", "0"))
    # started by Lightning: one node (more nodes need SLURM or torchrun, see check_distributed_support)
    return int(env.get("LOCAL_RANK", "0"))


def launch_id() -> str:
    """The id under which this launch's ranks agree. Rank 0 draws a fresh one for every run it
    starts; the ranks Lightning starts inherit it through the environment."""
    external = externally_launched()
    if external:
        return external
    if process_rank() == 0 and "LOCAL_RANK" not in os.environ:  # the launching process, before any fit
        os.environ[LAUNCH_ID_VARIABLE] = uuid.uuid4().hex
    if LAUNCH_ID_VARIABLE not in os.environ:
        raise RuntimeError(f"rank {process_rank()} started without {LAUNCH_ID_VARIABLE}: it was not launched by "
                           f"kdrun's rank 0, SLURM or torchrun")
    return os.environ[LAUNCH_ID_VARIABLE]


class RankAgreement:
    """Rank 0 announces a decision; every other rank of the same launch reads it (waiting if needed)."""

    def __init__(self, run_dir: Path, name: str):
        self.path = Path(run_dir) / AGREEMENT_DIR / f"{name}-{launch_id()}.json"

    def announce(self, decision: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
        staging.write_text(json.dumps({"decision": decision}))
        os.replace(staging, self.path)  # atomic: a reader sees nothing or the whole decision

    def wait(self, timeout_s: float = AGREEMENT_TIMEOUT_S) -> str:
        deadline, logged = time.monotonic() + timeout_s, 0.0
        while not self.path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {process_rank()}: no decision from rank 0 in {self.path} after {timeout_s} s")
            if time.monotonic() - logged > 60:
                log.info("rank %d: waiting for rank 0's decision (%s)", process_rank(), self.path)
                logged = time.monotonic()
            time.sleep(0.2)
        return json.loads(self.path.read_text())["decision"]


def check_distributed_support(cfg) -> None:
    """Refuse, before anything trains, the combinations that hang or crash instead of training."""
    trainer_cfg = cfg.trainer
    if trainer_cfg.get("sync_batchnorm") and _accelerator(trainer_cfg) == "cpu":
        raise ConfigError("trainer.sync_batchnorm=true needs GPUs (SyncBatchNorm has no CPU implementation), but "
                          "the run trains on the CPU; allowed: trainer.sync_batchnorm=false on CPU")
    world = training_world_size(trainer_cfg)
    if int(trainer_cfg.get("num_nodes", 1) or 1) > 1 and externally_launched() is None:
        raise ConfigError(f"trainer.num_nodes={trainer_cfg.num_nodes} needs a cluster that starts every rank "
                          f"(SLURM: hydra/launcher=submitit_slurm with tasks_per_node == trainer.devices, or "
                          f"torchrun); allowed here: trainer.num_nodes=1")
    if world == 1:
        return
    launcher = _multirun_launcher()
    if launcher is None:  # a single run: Lightning starts the other ranks itself
        return
    supported = ("supported: a single run (no -m) with trainer=ddp, or a sweep through a launcher that starts each "
                 "job's processes itself, e.g. hydra/launcher=submitit_slurm with "
                 "hydra.launcher.tasks_per_node == trainer.devices")
    if not launcher.get("_target_", "").endswith("SlurmLauncher"):
        raise ConfigError(
            f"trainer.devices={trainer_cfg.devices} (world size {world}) in a multirun (-m) with launcher "
            f"{launcher.get('_target_')}: every rank Lightning starts would re-run the whole sweep; {supported}")
    tasks = launcher.get("tasks_per_node")
    if tasks != training_world_size({**trainer_cfg, "num_nodes": 1}):
        raise ConfigError(f"hydra.launcher.tasks_per_node={tasks} but trainer.devices={trainer_cfg.devices}: SLURM "
                          f"must start one task per device; {supported}")


def _multirun_launcher():
    """The launcher's config inside a Hydra multirun, else None (single run, or no Hydra at all)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    return hydra_cfg.launcher if hydra_cfg.mode == RunMode.MULTIRUN else None


def cluster_plugins() -> list:
    """Under SLURM, Lightning's cluster environment without its own requeue on USR1: submitit's
    launcher owns preemption and time limits (it requeues the job, which resumes from last.ckpt)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
