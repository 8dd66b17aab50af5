"""hydra/launcher=packed: a sweep's jobs that can train together run as packs, one Lightning fit per pack.

Every job still goes through Hydra's per-job machinery (`hydra.core.utils.run_job`: its run directory,
`.hydra/`, log file, job callbacks, the sweep recorder's line, its JobReturn), in three passes over a pack:

1. prepare: each member's `run_job` runs `kdrun.pipeline.prepare` (validation, data, teacher, cached teacher
   outputs; the job's `.hydra/` and log are written as usual), without the job callbacks, which belong to
   the job's one real run in pass 3;
2. train: the prepared members' students train as one fit (kdrun.engine.packed_stage); its checkpoints and
   log are in `<sweep dir>/.packs/<pack id>/`;
3. finish: each member's `run_job` runs the `kdrun` task itself, which finds its trained student here
   (`take_packed_result`) and evaluates and writes its outputs (`kdrun.pipeline.finish`), or raises the error
   that stopped it.

Jobs that cannot pack (kdrun.jobs.packing, kdrun.engine.packed_stage.member_obstacle) run as under the basic
launcher, and the log says why.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from pathlib import Path
from typing import Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext
from omegaconf import DictConfig, open_dict

from kdrun.jobs.packing import PackOptions, group_jobs, split_to_budget, submission_units
from kdrun.jobs.status import write_job_status

log = logging.getLogger("kdrun")
PACKS_DIR = ".packs"

# run directory -> (prepared run, its StageResult or the error that stopped it), for pass 3
_TRAINED: dict[str, tuple] = {}


def take_packed_result(output_dir: Path) -> tuple | None:
    """The trained member of a pack whose run directory this is (once), else None: the job runs alone."""
    return _TRAINED.pop(str(Path(output_dir).resolve()), None)


def _prepare_task(prepare, cfg: DictConfig):
    return prepare(cfg, Path(HydraConfig.get().runtime.output_dir))


class _Job:
    def __init__(self, number: int, overrides: Sequence[str], config: DictConfig):
        self.number, self.overrides, self.config = number, list(overrides), config

    def task_config(self) -> DictConfig:
        task = copy.deepcopy(self.config)
        with open_dict(task):
            del task["hydra"]
        return task


def memory_budget_bytes(options: PackOptions, device_type: str) -> float:
    """hydra.launcher.memory_budget_gb, or 90% of the GPU's free memory, or half the machine's free RAM."""
    if options.memory_budget_gb is not None:
        return float(options.memory_budget_gb) * 2 ** 30
    import torch

    if device_type == "cuda" and torch.cuda.is_available():
        return 0.9 * torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as handle:
            free = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:"))
        return 0.5 * free
    except (OSError, StopIteration):
        return 8.0 * 2 ** 30


class PackedSweep:
    """One `launch` of the packed launcher over a batch of the sweeper's jobs."""

    def __init__(self, hydra_context: HydraContext, config: DictConfig, task_function, options: PackOptions,
                 prepare):
        """`prepare`: kdrun.pipeline.prepare, handed over by the launcher (only commands import the pipeline)."""
        self.hydra_context, self.config, self.task_function = hydra_context, config, task_function
        self.options = options
        self.prepare_task = functools.partial(_prepare_task, prepare)
        from hydra._internal.callbacks import Callbacks  # Hydra has no public name for it

        # pass 1 runs the jobs' machinery without their callbacks: those fire once, in pass 3
        self.quiet_context = HydraContext(config_loader=hydra_context.config_loader, callbacks=Callbacks())

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.jobs = []
        for offset, overrides in enumerate(job_overrides):
            number = initial_job_idx + offset
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = number
                config.hydra.job.num = number
            self.jobs.append(_Job(number, overrides, config))
        groups, alone = group_jobs([job.task_config() for job in self.jobs], self.options)
        log.info("packed launcher: %d jobs, %d in %d candidate pack(s), %d alone", len(self.jobs),
                 sum(len(group) for group in groups), len(groups), len(alone))
        for position, reason in alone.items():
            log.info("\t#%d runs alone: %s", self.jobs[position].number, reason)
        if self.options.submit is not None:
            returns = self._submit(submission_units(groups, alone, self.options.max_pack_size))
        else:
            returns = {}
            for group in groups:
                returns.update(self._run_group(group))
            for position in sorted(set(range(len(self.jobs))) - set(returns)):
                returns[position] = self._run(self.jobs[position])
        return [returns[position] for position in range(len(self.jobs))]

    def _submit(self, units: list[list[int]]) -> dict[int, JobReturn]:
        """One submitit job per unit (a pack, or a job alone), all submitted at once as an array."""
        import submitit
        from hydra.core.singleton import Singleton

        folder = self.options.submitit_folder
        executor = submitit.AutoExecutor(folder=folder, cluster=self.options.submit)
        executor.update_parameters(**self.options.submitit)
        log.info("packed launcher: %d submitit %s job(s), one per pack or lone job (logs: %s)", len(units),
                 self.options.submit, Path(folder).parent)
        state = Singleton.get_state()
        submitted = executor.map_array(self._run_unit, units, [state] * len(units))
        returns = {}
        for job in submitted:
            returns.update(job.results()[0])
        return returns

    def _run_unit(self, positions: list[int], singleton_state: dict) -> dict[int, JobReturn]:
        """Inside a submitted job: the unit's pack (what cannot pack in it runs alone there)."""
        from hydra.core.singleton import Singleton

        Singleton.set_state(singleton_state)
        setup_globals()
        returns = self._run_group(positions) if len(positions) > 1 else {}
        for position in positions:
            if position not in returns:
                returns[position] = self._run(self.jobs[position])
        return returns

    def _run(self, job: _Job, context: HydraContext | None = None, task=None) -> JobReturn:
        log.info("\t#%d : %s", job.number, " ".join(filter_overrides(job.overrides)))
        ret = run_job(hydra_context=context or self.hydra_context, task_function=task or self.task_function,
                      config=copy.deepcopy(job.config), job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def _run_group(self, positions: list[int]) -> dict[int, JobReturn]:
        """Prepare the group's jobs, train those that still pack as packs and finish them; the jobs left out
        run alone later (the caller runs every position this leaves unanswered)."""
        from kdrun.engine.packed_stage import member_memory_bytes, member_obstacle, pass_signature

        jobs = {position: self.jobs[position] for position in positions}
        prepared: dict[int, object] = {}
        for position, job in jobs.items():
            ret = self._run(job, self.quiet_context, self.prepare_task)
            if ret.status.name != "COMPLETED":  # its own run (pass 3) meets the same error and records it
                log.info("\t#%d runs alone: its preparation failed (%s)", job.number, ret.return_value)
                continue
            obstacle = member_obstacle(ret.return_value)
            if obstacle is not None:
                log.info("\t#%d runs alone: %s", job.number, obstacle)
                continue
            prepared[position] = ret.return_value
        by_pass: dict[tuple, list[int]] = {}
        for position, member in prepared.items():
            by_pass.setdefault(pass_signature(member), []).append(position)
        returns = {}
        for members in by_pass.values():
            if len(members) == 1:
                log.info("\t#%d runs alone: its data or budget differ from the others' once built",
                         jobs[members[0]].number)
                continue
            sizes = [member_memory_bytes(prepared[position]) for position in members]
            device = self._device_type(prepared[members[0]])
            budget = memory_budget_bytes(self.options, device)
            packs = split_to_budget(members, sizes, budget, self.options.max_pack_size)
            if len(packs) > 1 and sum(sizes) > budget:
                log.info("packed launcher: %d students need about %.2f GiB, over the budget of %.2f GiB "
                         "(hydra.launcher.memory_budget_gb): split into packs of %s", len(members),
                         sum(sizes) / 2 ** 30, budget / 2 ** 30, ", ".join(str(len(pack)) for pack in packs))
            for pack in packs:
                if len(pack) == 1:
                    log.info("\t#%d runs alone: what is left of its group once cut to packs of at most %d "
                             "(hydra.launcher.max_pack_size) within the memory budget",
                             jobs[pack[0]].number, self.options.max_pack_size)
                    continue
                pack_jobs = [jobs[position] for position in pack]
                self._train(pack_jobs, [prepared[position] for position in pack])
                for position, job in zip(pack, pack_jobs):
                    returns[position] = self._run(job)
        return returns

    @staticmethod
    def _device_type(prepared) -> str:
        accelerator = str(prepared.cfg.trainer.get("accelerator") or "auto")
        import torch

        return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"

    def _train(self, jobs: list[_Job], members: list) -> None:
        from kdrun.engine.packed_stage import pack_owner, train_pack

        owner = pack_owner(members)
        pack_dir = self.sweep_dir / PACKS_DIR / owner.digest
        pack_dir.mkdir(parents=True, exist_ok=True)
        names = [member.output_dir.name for member in members]
        handler = logging.FileHandler(pack_dir / "kdrun.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s"))
        logging.getLogger().addHandler(handler)
        started = time.perf_counter()
        try:
            results = train_pack(members, pack_dir, names)
        except KeyboardInterrupt as error:
            for member in members:
                write_job_status(member.output_dir, error, status="interrupted")
            raise
        except Exception as error:  # the whole pack stopped: each member's run records why
            log.error("pack %s stopped: %s", owner.digest, error)
            results = [error] * len(members)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        elapsed = time.perf_counter() - started
        for member, result in zip(members, results):
            member.times["student/wall_time_s"] = elapsed  # the pack's: its members trained at once
            _TRAINED[str(member.output_dir.resolve())] = (member, result)
