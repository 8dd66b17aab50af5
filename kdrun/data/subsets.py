"""kappa data fractions: which training-pool samples the teacher and the student see.

The teacher takes the first N samples of a permutation of the pool (seeded by
`data.pool_seed`). The student's samples come from a second permutation, seeded by the
subset seed, that lists the teacher's N samples first and the rest of the pool after them;
the student takes its first M = round(kappa * N). Hence kappa <= 1 draws from the teacher's
data, kappa > 1 adds unseen samples, and for one subset seed smaller kappa is nested in larger.
"""

from __future__ import annotations

import math

import numpy as np

from kdrun.errors import ConfigError
from kdrun.config.checks import check_flag, check_number, check_seed, check_whole_number


def check_subset_config(cfg) -> None:
    """The kappa settings from the config alone (against the pool's size: kappa_subsets)."""
    check_whole_number(cfg.get("teacher_size"), "data.teacher_size", minimum=1, allow_none=True,
                       meaning="N; null: the whole training pool")
    student_size = check_whole_number(cfg.get("student_size"), "data.student_size", minimum=1, allow_none=True,
                                      meaning="an absolute M instead of kappa")
    kappa = check_number(cfg.get("kappa"), "data.kappa", low=0, low_inclusive=False,
                         allow_none=student_size is not None,
                         meaning="the student trains on M = round(kappa * N) samples")
    _check_kappa_or_size(kappa, student_size)
    check_flag(cfg.get("stratified", False), "data.stratified", meaning="every prefix keeps the class proportions")
    check_seed(cfg.get("pool_seed", 0), "data.pool_seed", meaning="which N samples the teacher trains on")


def _check_kappa_or_size(kappa, student_size) -> None:
    if student_size is not None and kappa not in (None, 1.0):
        raise ConfigError(f"set either data.kappa ({kappa}) or data.student_size ({student_size}), not both; "
                          f"allowed: data.kappa=1.0 or null with data.student_size")


def seeded_order(targets: np.ndarray, seed: int, stratified: bool) -> np.ndarray:
    """A seeded permutation of range(len(targets)).

    Stratified: each next position goes to the class furthest behind its share (ties broken
    by a seeded random class ranking), taking that class's samples in a seeded random order,
    so every prefix holds each class's proportion to within one sample.
    """
    rng = np.random.default_rng(seed)
    n = len(targets)
    if not stratified:
        return rng.permutation(n)
    classes, counts = np.unique(targets, return_counts=True)
    members = [rng.permutation(np.flatnonzero(targets == label)) for label in classes]
    share = counts / n
    tie_break = rng.random(len(classes)) * 1e-9
    taken = np.zeros(len(classes), dtype=np.int64)
    order = np.empty(n, dtype=np.int64)
    for position in range(n):
        deficit = share * (position + 1) - taken + tie_break
        deficit[taken == counts] = -np.inf
        chosen = int(np.argmax(deficit))
        order[position] = members[chosen][taken[chosen]]
        taken[chosen] += 1
    return order


def kappa_subsets(
    targets: np.ndarray,
    num_classes: int,
    teacher_size: int | None,
    kappa: float | None,
    student_size: int | None,
    pool_seed: int,
    subset_seed: int,
    stratified: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(teacher indices, student indices) into the training pool."""
    pool = len(targets)
    n = pool if teacher_size is None else int(teacher_size)
    if not 0 < n <= pool:
        raise ConfigError(f"data.teacher_size={teacher_size} must be between 1 and the pool size {pool}")
    m = student_count(n, kappa, student_size)
    # Name the setting the user actually gave: an absolute student_size, or kappa.
    given = f"data.student_size={student_size}" if student_size is not None else f"data.kappa={kappa}"
    if m < num_classes:
        allowed = (f"student_size >= {num_classes}" if student_size is not None
                   else f"kappa >= {num_classes / n:.4g} with this N")
        raise ConfigError(
            f"{given} gives M={m} student samples (N={n}), fewer than one per class "
            f"({num_classes} classes); allowed: {allowed}"
        )
    if m > pool:
        allowed = (f"student_size <= {pool}" if student_size is not None
                   else f"kappa <= {pool / n:.4g} with this N, or a smaller data.teacher_size")
        raise ConfigError(
            f"{given} asks for M={m} student samples but the training pool has only {pool} "
            f"(teacher N={n}); allowed: {allowed}"
        )
    teacher = seeded_order(targets, pool_seed, stratified)[:n]
    rest = np.setdiff1d(np.arange(pool), teacher, assume_unique=True)
    student_order = np.concatenate([
        teacher[seeded_order(targets[teacher], subset_seed, stratified)],
        rest[seeded_order(targets[rest], subset_seed, stratified)],
    ])
    return np.sort(teacher), np.sort(student_order[:m])


def student_count(n: int, kappa: float | None, student_size: int | None) -> int:
    if student_size is not None:
        _check_kappa_or_size(kappa, student_size)
        if int(student_size) <= 0:
            raise ConfigError(f"data.student_size={student_size} must be a positive integer")
        return int(student_size)
    if kappa is None or not math.isfinite(float(kappa)) or float(kappa) <= 0:
        raise ConfigError(f"data.kappa={kappa} must be a number > 0 (M = round(kappa * N) student samples)")
    return int(round(float(kappa) * n))
