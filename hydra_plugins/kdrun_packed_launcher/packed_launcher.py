"""`hydra/launcher=packed`: the sweep's students that can train together train as packs (kdrun.jobs.packed_sweep).

Hydra finds launchers only in the `hydra_plugins` namespace package and imports every plugin at start-up,
so this module imports Hydra alone; kdrun's training modules load when a sweep launches.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.kdrun_packed_launcher.packed_launcher.PackedLauncher"
    # students trained together at most; a pack is also cut to fit the memory budget
    max_pack_size: int = 16
    # GiB a pack's training may use (estimated from each student's weights, optimiser state and activations);
    # null: 90% of the GPU's free memory, half the machine's free RAM on a CPU
    memory_budget_gb: Optional[float] = None
    # true: every job must pack with the others, else an error names the key that keeps them apart
    strict: bool = False
    # null: the packs train in the sweep's own process, one after another | slurm | local: each pack (and each
    # job that runs alone) is one submitit job, e.g. one SLURM job per pack, with the resources below
    submit: Optional[str] = None
    # submitit's executor parameters for each pack's job: its generic names (timeout_min, gpus_per_node,
    # cpus_per_task, mem_gb, nodes) and slurm_* ones (slurm_partition, slurm_account, slurm_setup, ...)
    submitit: Dict[str, Any] = field(default_factory=lambda: {"timeout_min": 240, "tasks_per_node": 1})
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="kdrun")


class PackedLauncher(Launcher):
    def __init__(self, max_pack_size: int = 16, memory_budget_gb: Optional[float] = None, strict: bool = False,
                 submit: Optional[str] = None, submitit: Optional[Dict[str, Any]] = None,
                 submitit_folder: str = ".submitit/%j"):
        from omegaconf import OmegaConf

        if OmegaConf.is_config(submitit):
            submitit = OmegaConf.to_container(submitit, resolve=True)
        self.options = {"max_pack_size": max_pack_size, "memory_budget_gb": memory_budget_gb, "strict": strict,
                        "submit": submit, "submitit": dict(submitit or {}), "submitit_folder": str(submitit_folder)}
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from kdrun.jobs.packed_sweep import PackedSweep
        from kdrun.jobs.packing import PackOptions
        from kdrun.pipeline import prepare  # a command's part: kdrun's packages never import the pipeline

        options = PackOptions.from_config(self.options)
        return PackedSweep(self.hydra_context, self.config, self.task_function, options, prepare).launch(
            job_overrides, initial_job_idx)
