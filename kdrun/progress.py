"""Progress of long work outside a training loop (decoding an image folder, filling a cache): a bar on a
terminal, a start and an end line in logs and pipes. Any layer may use it; it imports only tqdm."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

log = logging.getLogger("kdrun")
Item = TypeVar("Item")


def progress(items: Iterable[Item], description: str, total: int | None = None) -> Iterator[Item]:
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=description, total=total, leave=False, dynamic_ncols=True)
        return
    started = time.perf_counter()
    log.info("%s: %s items ...", description, "?" if total is None else f"{total:,}")
    yield from items
    log.info("%s: done in %.1f s", description, time.perf_counter() - started)
