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


class Counter:
    """A count of work done towards a known total: a bar on a terminal; in logs and pipes a start line, a line
    at each tenth of the way (with the rate and the time left) and an end line."""

    def __init__(self, total: int, description: str, unit: str = "item"):
        self.total, self.description, self.unit, self.done = int(total), description, unit, 0
        self._bar, self._started, self._next_tenth = None, time.perf_counter(), 1
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True)
        else:
            log.info("%s: %s %ss ...", description, f"{self.total:,}", unit)

    def update(self, count: int) -> None:
        self.done += int(count)
        if self._bar is not None:
            self._bar.update(count)
            return
        tenth = self.done * 10 // self.total if self.total else 0
        if self._next_tenth <= tenth < 10:  # the end line reports the whole  # one line however many tenths this update crossed
            elapsed = time.perf_counter() - self._started
            rate = self.done / max(elapsed, 1e-9)
            log.info("%s: %d%% (%s of %s %ss, %.0f/s, %.0f s left)", self.description, 10 * tenth,
                     f"{self.done:,}", f"{self.total:,}", self.unit, rate, (self.total - self.done) / max(rate, 1e-9))
            self._next_tenth = tenth + 1

    def close(self) -> float:
        """Ends the display; returns the seconds since the start."""
        elapsed = time.perf_counter() - self._started
        if self._bar is not None:
            self._bar.close()
        else:
            log.info("%s: %s %ss in %.1f s", self.description, f"{self.done:,}", self.unit, elapsed)
        return elapsed

    def __enter__(self) -> "Counter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
