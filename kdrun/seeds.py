"""One master seed, and the independent seeds derived from it.

Paired statistics need runs that differ only in the loss to start from identical weights
and see identical batches; deriving every stream from the master seed gives exactly that,
and setting a stream explicitly (e.g. `seeds.data_order=7`) decouples it (paper 003 splits
the init seed from the data-order seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdrun.value_checks import check_keys, check_mapping, check_seed

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
