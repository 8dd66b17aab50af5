"""One master seed, and the independent seeds derived from it.

Paired statistics need runs that differ only in the loss to start from identical weights
and see identical batches; deriving every stream from the master seed gives exactly that,
and setting a stream explicitly (e.g. `seeds.data_order=7`) decouples it (paper 003 splits
the init seed from the data-order seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from kdrun.config.checks import check_keys, check_mapping, check_seed
from kdrun.errors import ConfigError

# Stable stream identifiers: changing them would change every derived seed.
_STREAMS = {"init": 1, "data_order": 2, "subset": 3}


def derive_seed(master: int, stream: str) -> int:
    """A 31-bit seed for `stream`, a pure function of the master seed."""
    state = np.random.SeedSequence([int(master), _STREAMS[stream]]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


@dataclass(frozen=True)
class Seeds:
    master: int
    init: int
    data_order: int
    subset: int


def resolve_seeds(master: int, overrides) -> Seeds:
    """`overrides` maps stream name to an explicit seed or None (derive it). Checks `seed` and `seeds.*`."""
    check_seed(master, "seed", meaning="the master seed")
    overrides = check_mapping(overrides, "seeds", allow_none=True) or {}
    check_keys(overrides, "seeds", tuple(_STREAMS))
    chosen = {}
    for stream in _STREAMS:
        value = check_seed(overrides.get(stream), f"seeds.{stream}", allow_none=True,
                           meaning="null derives it from seed")
        # `is None`, not truthiness: an explicit seed 0 must be honoured.
        chosen[stream] = derive_seed(master, stream) if value is None else value
    return Seeds(master=int(master), **chosen)


def student_init_seed(cfg: DictConfig, seeds) -> int:
    """The seed the student is built under: its own `seeds.init`, or the teacher's (`student.init=teacher`).

    With `teacher` the student starts from the teacher's initial weights, which needs the same
    architecture and a teacher this run trains (or reuses) from `teacher.seed`. Training it with
    the teacher's data order too would only retrain the teacher, so that is refused."""
    init = cfg.student.get("init", "own")
    if init == "own":
        return seeds.init
    if init != "teacher":
        raise ConfigError(f"student.init={init!r}; allowed: own (from seeds.init), teacher (the teacher's initial weights)")
    teacher_model = OmegaConf.to_container(cfg.teacher.model, resolve=True)
    if teacher_model != OmegaConf.to_container(cfg.student.model, resolve=True):
        raise ConfigError(
            f"student.init=teacher needs the teacher's architecture, but student.model={cfg.student.model.name} "
            f"differs from teacher.model={teacher_model['name']} (or their options differ); allowed: "
            f"student={teacher_model['name']} with the same options, or student.init=own"
        )
    if cfg.teacher.checkpoint is not None or cfg.teacher.get("oracle"):
        raise ConfigError("student.init=teacher needs the teacher's initial weights, which an imported "
                          "(teacher.checkpoint) or oracle teacher does not have; allowed: student.init=own")
    if seeds.data_order == derive_seed(cfg.teacher.seed, "data_order"):
        raise ConfigError(
            f"student.init=teacher with seeds.data_order={seeds.data_order}, the teacher's own data order, would "
            f"retrain the teacher; allowed: a seed other than teacher.seed={cfg.teacher.seed} (seed={cfg.seed}), "
            f"or another seeds.data_order"
        )
    return int(cfg.teacher.seed)
