"""Which jobs of a sweep can train together as one pack (hydra/launcher=packed), decided from their configs.

A pack is K students of one architecture trained in one process, one pass over the data and one optimiser
step per batch (kdrun.engine.packed_students). Its members must agree on everything that shapes the pass:
the student's architecture, the data it is drawn from, the batch size, the budget, the recipe's optimiser
family and learning-rate schedule, the trainer. What may differ is what a member evaluates on its own slice:
its seeds (init, data order, kappa subset), its loss and loss options, its loss schedule, its teacher (when
the teacher's outputs are cached, checked once the teachers are known), and its learning rate and weight
decay (per-member tensors of kdrun.engine.packed_optimizer). Seeds inside the data block may differ too
(a synthetic source drawn per seed): each member keeps its own splits.

`pack_signature` is a job's config minus the keys that may differ; jobs with equal signatures pack.
`explain_difference` names the first key two signatures disagree on, for the log and for `strict` packing.
Only OmegaConf is imported here: the launcher groups jobs before any training module loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from kdrun.errors import ConfigError

# Settings each member keeps for itself (top-level groups and dotted keys of the job's config).
MEMBER_KEYS = ("seed", "seeds", "loss", "loss_options", "schedule", "teacher", "objective", "evaluation",
               "student.optimizer.lr", "student.optimizer.weight_decay", "student.init", "resume", "logger")
# Losses, schedules and evaluation are per member; architectures of these families are known to run under
# torch.func.vmap with stacked BatchNorm statistics (tests/engine/test_packed_students.py).
# (zoo names of configs/model/: the CIFAR ResNets under their presets' names too)
PACKABLE_MODELS = ("mlp", "cnn", "logistic_regression", "random_features", "channelwise_linear",
                   "resnet_cifar", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                   "preact_resnet_cifar", "preact_resnet20", "preact_resnet32", "preact_resnet56", "preact_resnet110",
                   "vgg11", "vgg19")
STACKABLE_OPTIMIZERS = ("sgd", "adam", "adamw")
SUBMIT_TARGETS = (None, "local", "slurm")
SHOWN_DIFFERENCES = 3


@dataclass(frozen=True)
class PackOptions:
    """The `hydra.launcher` options of hydra/launcher=packed."""

    max_pack_size: int = 16
    memory_budget_gb: float | None = None  # None: 90% of a GPU's free memory, half the free RAM on a CPU
    strict: bool = False  # every job must pack with the others: an error names the key that keeps them apart
    submit: str | None = None  # None: packs train in the sweep's process | local | slurm: a submitit job per pack
    submitit: dict = field(default_factory=dict)  # the executor's parameters
    submitit_folder: str = ".submitit/%j"

    @classmethod
    def from_config(cls, launcher_cfg) -> "PackOptions":
        options = cls(max_pack_size=launcher_cfg.get("max_pack_size", 16),
                      memory_budget_gb=launcher_cfg.get("memory_budget_gb"),
                      strict=launcher_cfg.get("strict", False), submit=launcher_cfg.get("submit"),
                      submitit=dict(launcher_cfg.get("submitit") or {}),
                      submitit_folder=str(launcher_cfg.get("submitit_folder", ".submitit/%j")))
        if options.submit not in SUBMIT_TARGETS:
            raise ConfigError(f"hydra.launcher.submit={options.submit!r}; allowed: null (packs train in the sweep's "
                              f"process), local or slurm (one submitit job per pack)")
        size = options.max_pack_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"hydra.launcher.max_pack_size={size!r}; allowed: a whole number >= 1 (students "
                              f"trained together at most)")
        budget = options.memory_budget_gb
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise ConfigError(f"hydra.launcher.memory_budget_gb={budget!r}; allowed: a number of GiB > 0, or null "
                              f"(90% of the GPU's free memory, half the free RAM on a CPU)")
        if not isinstance(options.strict, bool):
            raise ConfigError(f"hydra.launcher.strict={options.strict!r}; allowed: true (every job must pack with "
                              f"the others) or false (jobs that cannot pack run alone)")
        return options


def _plain(cfg: DictConfig) -> dict:
    """The job's config as plain values, interpolations resolved where they can be outside a running job."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${hydra:runtime.output_dir}, known only inside the job
        return OmegaConf.to_container(cfg, resolve=False)


def _drop(tree: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.get(key)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def pack_obstacle(cfg: DictConfig) -> str | None:
    """Why a job cannot train in a pack at all (it then runs alone, as today), or None."""
    plain = _plain(cfg)
    student = plain.get("student") or {}
    model = (student.get("model") or {}).get("name")
    if model not in PACKABLE_MODELS:
        return f"student.model.name={model} (packs: {', '.join(PACKABLE_MODELS)})"
    optimizer = (student.get("optimizer") or {}).get("name")
    if optimizer not in STACKABLE_OPTIMIZERS:
        return f"student.optimizer.name={optimizer} (packs: {', '.join(STACKABLE_OPTIMIZERS)})"
    analysis = plain.get("analysis") or {}
    if (analysis.get("snapshots") or {}).get("at") or (analysis.get("eigenspace") or {}).get("enabled"):
        return "analysis callbacks (analysis.snapshots.at, analysis.eigenspace.enabled) watch one student"
    data = plain.get("data") or {}
    if (data.get("augment") or "none") not in ("none", "cifar_standard") and data.get("view_pool") is None:
        # a fresh-draw augmentation draws from the process's one generator: members' streams would interleave
        return (f"data.augment={data.get('augment')} draws fresh views from the process's generator (packs: none, "
                f"cifar_standard, or data.view_pool)")
    trainer = plain.get("trainer") or {}
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    if "ddp" in str(trainer.get("strategy") or "") or (isinstance(devices, int) and devices > 1) or int(nodes) > 1:
        return (f"trainer.devices={devices} trainer.num_nodes={nodes}: a pack trains on one device (several "
                f"devices: hydra/launcher=local or slurm)")
    return None


def pack_signature(cfg: DictConfig) -> dict:
    """The settings that must be equal for two jobs to pack (the job's config minus MEMBER_KEYS)."""
    plain = _plain(cfg)
    plain.pop("hydra", None)
    for dotted in MEMBER_KEYS:
        _drop(plain, dotted)
    data = plain.get("data") or {}
    for key in [key for key in data if key.endswith("seed")]:  # a synthetic source drawn per seed
        data.pop(key)
    if isinstance(data.get("label_noise"), dict):
        data["label_noise"].pop("seed", None)
    return plain


def signature_key(signature: dict) -> str:
    return json.dumps(signature, sort_keys=True, default=str)


def _flat(tree: Any, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def explain_difference(first: dict, second: dict) -> str:
    """`key: a vs b` for the first few keys where two signatures differ."""
    a, b = _flat(first), _flat(second)
    # a differing `name` (the architecture, the optimiser) says more than the options that follow from it
    keys = sorted((key for key in set(a) | set(b) if a.get(key) != b.get(key)),
                  key=lambda key: (not key.endswith(".name"), key))
    shown = [f"{key}={a.get(key)!r} vs {b.get(key)!r}" for key in keys[:SHOWN_DIFFERENCES]]
    more = f" and {len(keys) - SHOWN_DIFFERENCES} more" if len(keys) > SHOWN_DIFFERENCES else ""
    return "; ".join(shown) + more


def group_jobs(configs: Sequence[DictConfig], options: PackOptions) -> tuple[list[list[int]], dict[int, str]]:
    """The jobs (positions in `configs`) of each group that may pack, in sweep order, and why each job left out
    runs alone. Groups are not yet cut to size: that needs the members' memory (kdrun.jobs.packed_sweep)."""
    groups: dict[str, list[int]] = {}
    signatures: dict[str, dict] = {}
    alone: dict[int, str] = {}
    for position, cfg in enumerate(configs):
        obstacle = pack_obstacle(cfg)
        if obstacle is not None:
            alone[position] = obstacle
            continue
        signature = pack_signature(cfg)
        key = signature_key(signature)
        signatures.setdefault(key, signature)
        groups.setdefault(key, []).append(position)
    packs = list(groups.values())
    if options.strict:
        if alone:
            position, reason = next(iter(alone.items()))
            raise ConfigError(f"hydra.launcher.strict=true, but job {position} cannot train in a pack: {reason}; "
                              f"allowed: strict=false (it runs alone) or settings that pack")
        if len(packs) > 1:
            first, second = (signatures[key] for key in list(groups)[:2])
            raise ConfigError(f"hydra.launcher.strict=true, but jobs {packs[0][0]} and {packs[1][0]} cannot train in "
                              f"one pack: they differ in {explain_difference(first, second)}; a pack's students "
                              f"share architecture, data, batch size, budget, optimiser and trainer; allowed: "
                              f"strict=false (each group packs on its own) or a sweep over member settings only")
    for key, members in groups.items():
        if len(members) == 1:
            others = [signatures[other] for other in groups if other != key]
            alone[members[0]] = ("no other job shares its settings" if not others else "it differs from every "
                                 f"other job, e.g. in {explain_difference(signatures[key], others[0])}")
    return [members for members in packs if len(members) > 1], alone


def submission_units(groups: list[list[int]], alone: dict[int, str], max_size: int) -> list[list[int]]:
    """What one submitted job trains: a candidate pack cut to `max_size`, or one job that runs alone."""
    units = [group[start:start + max_size] for group in groups for start in range(0, len(group), max_size)]
    return units + [[position] for position in sorted(alone)]


def split_to_budget(members: list[int], member_bytes: Sequence[float], budget_bytes: float,
                    max_size: int) -> list[list[int]]:
    """Consecutive packs of at most `max_size` members whose estimated memory fits `budget_bytes`
    (a member larger than the budget alone still forms a pack of one)."""
    packs: list[list[int]] = [[]]
    used = 0.0
    for member, size in zip(members, member_bytes):
        if packs[-1] and (len(packs[-1]) >= max_size or used + size > budget_bytes):
            packs.append([])
            used = 0.0
        packs[-1].append(member)
        used += size
    return packs
