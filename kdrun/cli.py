"""The `kdrun` command: a Hydra application around `kdrun.pipeline.run`.

Only Hydra and OmegaConf are imported at module level, so `kdrun --help` and
`kdrun --cfg job` answer without loading torch or Lightning. `--help` is answered here rather
than by Hydra: Hydra's help copies the whole config store once per option of every group
(about six seconds with the zoo registered under two roles); this one lists the same groups
from the config folders and composes the config once.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from kdrun.config.roles import ROLE_GROUPS, register_role_groups
from kdrun.config.tree import config_dir


# configs/hydra/launcher/joblib.yaml deliberately replaces the joblib plugin's preset of the same name;
# Hydra still checks it against the plugin's schema, and only the notice that it does so is silenced.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema")

CONFIGS = config_dir()
HELP_FLAGS = ("--help", "-h")


def main() -> float | None:
    """The console script: fast help, or the Hydra application.

    Exit codes: 0 done; 2 invalid configuration (nothing trained; also a key or option Hydra cannot
    compose); 1 a run that stopped for a stated reason (divergence, full disk) or crashed;
    130 interrupted (Ctrl-C). Every run directory receives status.json saying which."""
    if any(flag in sys.argv[1:] for flag in HELP_FLAGS):
        from hydra.errors import HydraException

        try:
            print(help_text([arg for arg in sys.argv[1:] if arg not in HELP_FLAGS]))
        except HydraException as error:  # e.g. an unknown option in an override
            print(f"kdrun: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        return None
    register_role_groups(CONFIGS)
    global _TASK_STARTED
    _TASK_STARTED = False  # (main may run more than once in a process: tests, notebooks)
    try:
        return hydra_main()
    except SystemExit as exit_:
        # Hydra reports a config it cannot compose (a misspelled key, an unknown option) and exits 1
        # from inside its `except`, so the composition error is the exit's context.
        if exit_.code == 1 and not _TASK_STARTED and _is_composition_error(exit_.__context__):
            _record_composition_error(exit_.__context__)
            raise SystemExit(2) from None
        from kdrun.errors import ConfigError

        if exit_.code == 1 and not _TASK_STARTED and isinstance(exit_.__context__, ConfigError):  # launcher options
            print(f"kdrun: invalid configuration: {exit_.__context__}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


_TASK_STARTED = False  # set once Hydra has composed the config and called the task function


def _is_composition_error(error: BaseException | None) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(error, (HydraException, OmegaConfBaseException))


def _record_composition_error(error: BaseException) -> None:
    """status.json in the directory a single run would have written (a sweep has no job directory yet)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    arguments = sys.argv[1:]
    if any(arg in ("-m", "--multirun") or arg.startswith("-") for arg in arguments):
        return
    where = [arg for arg in arguments if arg.lstrip("+").startswith(("hydra.run.dir=", "paths.", "hydra.job.name="))]
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name="kdrun"):
            cfg = compose(config_name="train", overrides=where, return_hydra_config=True)
        run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    except (HydraException, ValueError):
        return  # the location settings themselves are what is wrong
    from kdrun.jobs.status import write_job_status

    write_job_status(run_dir, error, status="invalid configuration")
def config_groups() -> dict[str, list[str]]:
    """Every selectable group (nested ones as `experiment/paper000`) and its options, as on the command line."""
    groups = {}
    for folder in sorted(path for path in CONFIGS.rglob("*") if path.is_dir()):
        group = folder.relative_to(CONFIGS).as_posix()
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        if group.split("/")[0] == "hydra" or not options:
            continue
        for name in ROLE_GROUPS.get(group, (group,)):
            groups[name] = options
    return dict(sorted(groups.items()))


def help_text(overrides: list[str]) -> str:
    """What `kdrun --help [overrides]` prints: the header, the groups and the composed config, as Hydra lays them out."""
    from hydra import compose, initialize_config_dir

    register_role_groups(CONFIGS)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3", job_name="kdrun"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    help_cfg = cfg.hydra.help
    header, footer = str(help_cfg.header), str(help_cfg.footer)  # resolved against the composed config
    with open_dict(cfg):
        del cfg["hydra"]
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups().items())
    return (f"{header}\n== Configuration groups ==\nCompose your configuration from those groups (group=option)\n\n"
            f"{groups}\n\n\n== Config ==\nOverride anything in the config (foo.bar=value)\n\n"
            f"{OmegaConf.to_yaml(cfg)}\n{footer}")


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    global _TASK_STARTED
    _TASK_STARTED = True
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from kdrun.engine.distributed import process_rank
    from kdrun.errors import ConfigError, RunError
    from kdrun.pipeline import finish, run
    from kdrun.jobs.launchers import check_launcher_support
    from kdrun.jobs.packed_sweep import take_packed_result
    from kdrun.jobs.status import describe_disk_full, write_job_status

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        check_launcher_support(cfg, hydra_cfg)
        packed = take_packed_result(output_dir)  # hydra/launcher=packed trained this job's student in a pack
        metrics = finish(*_trained(packed)) if packed is not None else run(cfg, output_dir=output_dir)
        if process_rank() > 0:
            return None  # DDP: only rank 0 evaluates, writes outputs and answers the sweeper
        objective = sweeper_objective(cfg, metrics)
    except KeyboardInterrupt as error:  # Ctrl-C: Lightning turns it into SystemExit(1) inside a fit
        write_job_status(output_dir, error, status="interrupted")
        print(f"kdrun: interrupted; {output_dir} keeps the last epoch checkpoint (run the same command to resume)",
              file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        error = describe_disk_full(error, output_dir)
        # recorded in the run directory, so a failed sweep job is explained where its results would be
        write_job_status(output_dir, error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise error  # Hydra records the failed job and carries on with the sweep
        if isinstance(error, ConfigError):
            print(f"kdrun: invalid configuration: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        if isinstance(error, RunError):
            print(f"kdrun: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        raise
    write_job_status(output_dir, objective=objective)
    return objective


def _trained(packed: tuple) -> tuple:
    """A packed member's (prepared run, student result), or the error that stopped it in its pack."""
    prepared, result = packed
    if isinstance(result, BaseException):
        raise result
    return prepared, result


def sweeper_objective(cfg: DictConfig, metrics: dict) -> float:
    """The value Hydra sweepers (e.g. Optuna) optimise: `objective`, a key of metrics.json.

    A NaN or a missing key would crash a whole Optuna sweep, so both stop this job instead."""
    import math

    key = cfg.get("objective") or "student/val/acc"
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, float))
        raise ValueError(f"objective={key!r} is {value!r} in this run's metrics.json; allowed: a numeric key such as "
                         f"{', '.join(numeric[:8])}, ...")
    return float(value)


if __name__ == "__main__":
    main()
