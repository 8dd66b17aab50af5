"""Mean, std (ddof=1), SEM and n of each metric over the seeds of each condition."""

from __future__ import annotations

from fnmatch import fnmatchcase

import numpy as np
import pandas as pd

from kdrun.report.collect import numeric_metrics, split_columns
from kdrun.report.errors import ReportError

# Columns that only re-draw randomness: averaged over, never a condition of their own.
DEFAULT_SEED_COLUMNS = ("seed", "seeds.*")


def is_seed_column(column: str, seed_columns=DEFAULT_SEED_COLUMNS) -> bool:
    return any(fnmatchcase(column, pattern) for pattern in seed_columns)


def group_columns(table: pd.DataFrame, seed_columns=DEFAULT_SEED_COLUMNS, exclude=()) -> list[str]:
    """The varying columns that define a condition: all but the seed-like ones and `exclude`."""
    conditions, _ = split_columns(table)
    return [c for c in conditions if not is_seed_column(c, seed_columns) and c not in exclude]


def select_metrics(table: pd.DataFrame, patterns: list[str] | None) -> list[str]:
    """The numeric metric columns matching `patterns` (globs, e.g. 'student/test/*'); all without."""
    available = numeric_metrics(table)
    if not patterns:
        return available
    chosen = []
    for pattern in patterns:
        matched = [m for m in available if fnmatchcase(m, pattern)]
        if not matched:
            raise ReportError(f"--metrics {pattern!r} matches no numeric metric; allowed: {', '.join(available)}")
        chosen += [m for m in matched if m not in chosen]
    return chosen


def summarize(table: pd.DataFrame, metrics: list[str] | None = None,
              seed_columns=DEFAULT_SEED_COLUMNS) -> pd.DataFrame:
    """Long table: one row per (condition, metric) with n, mean, std (ddof=1), sem."""
    ok = table[table["status"] == "ok"]
    metrics = metrics or numeric_metrics(table)
    by = group_columns(table, seed_columns)
    groups = ok.groupby(by, dropna=False, sort=False) if by else [((), ok)]
    rows = []
    for key, runs in groups:
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            values = pd.to_numeric(runs[metric], errors="coerce").dropna().to_numpy(dtype=float)
            n = len(values)
            std = float(np.std(values, ddof=1)) if n > 1 else float("nan")
            rows.append({**dict(zip(by, key)), "metric": metric, "n": n,
                         "mean": float(values.mean()) if n else float("nan"),
                         "std": std, "sem": std / np.sqrt(n) if n > 1 else float("nan")})
    return pd.DataFrame(rows, columns=[*by, "metric", "n", "mean", "std", "sem"])


def summary_wide(summary: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """'mean ± std (n)' per condition (rows) and metric (columns), for reading in the report."""
    by = [c for c in summary.columns if c not in ("metric", "n", "mean", "std", "sem")]
    cells = summary.assign(cell=[f"{m:.{digits}f} ± {s:.{digits}f} (n={n})"
                                 for m, s, n in zip(summary["mean"], summary["std"], summary["n"])])
    if not by:
        return cells.set_index("metric")[["cell"]].T.reset_index(drop=True)
    wide = cells.pivot_table(index=by, columns="metric", values="cell", aggfunc="first", dropna=False, sort=False)
    return wide.reset_index().rename_axis(columns=None)


def select_best(summary: pd.DataFrame, metric: str, over: list[str], higher_is_better: bool,
                reported: list[str]) -> pd.DataFrame:
    """Select on one metric, report others: among the settings of the `over` columns (all condition
    columns when empty), the one with the best mean `metric`, separately for each setting of the
    remaining condition columns; with the means of `reported` (e.g. test metrics) for the chosen one.

    This is "select on dev, report on test" (paper 004): choose by `student/val/acc`, read `student/test/acc`."""
    by = [c for c in summary.columns if c not in ("metric", "n", "mean", "std", "sem")]
    unknown = [c for c in over if c not in by]
    if unknown:
        raise ReportError(f"--select-over {', '.join(unknown)} is not a condition column; allowed: {', '.join(by)}")
    if metric not in set(summary["metric"]):
        raise ReportError(f"--select-by {metric!r} is not a metric of these runs; allowed: e.g. "
                          f"{', '.join(sorted(m for m in set(summary['metric']) if '/val/' in m)[:6])}")
    over = over or by
    fixed = [c for c in by if c not in over]
    scored = summary[summary["metric"] == metric]
    groups = scored.groupby(fixed, dropna=False, sort=False) if fixed else [((), scored)]
    rows = []
    for _, group in groups:
        best = group.loc[group["mean"].idxmax() if higher_is_better else group["mean"].idxmin()]
        row = {c: best[c] for c in by}
        row.update({"selected_by": metric, "selected_mean": best["mean"], "n": best["n"],
                    "candidates": len(group)})
        for name in reported:
            match = summary[(summary["metric"] == name) & (summary[by].astype(str) == best[by].astype(str)).all(axis=1)]
            row[name] = match["mean"].iloc[0] if len(match) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
