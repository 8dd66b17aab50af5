"""Find run directories and build the tidy runs table: one row per run, the overrides that vary
across the runs as columns (the experimental conditions), then the metrics of `metrics.json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import yaml

from kdrun.report.errors import ReportError

# Overrides that say where a run was written, not what was run: never a condition.
NON_CONDITION_PREFIXES = ("paths.", "hydra.", "hydra/")
BOOKKEEPING_COLUMNS = ("run_dir", "status", "error")


def parse_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, anything else stays a string, so columns sort and plot as numbers."""
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def find_run_dirs(roots: list[Path]) -> list[Path]:
    """Every directory under `roots` (or a root itself) holding `metrics.json` or `.hydra/`."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise ReportError(f"{root} is not a directory; allowed: directories holding runs or sweeps")
        candidates = [root, *root.rglob("metrics.json"), *root.rglob(".hydra")]
        for path in candidates:
            run_dir = path if path == root else path.parent
            if (run_dir / "metrics.json").is_file() or (run_dir / ".hydra").is_dir():
                found.add(run_dir.resolve())
    return sorted(found)


def read_overrides(run_dir: Path) -> dict:
    """`.hydra/overrides.yaml` as {key: value}; `loss=kd` (a config group) gives {'loss': 'kd'}."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    overrides = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, separator, value = str(item).partition("=")
        if not separator or key.startswith("~"):
            continue  # deletions carry no value to compare on
        key = key.lstrip("+")
        if key.startswith(NON_CONDITION_PREFIXES):
            continue
        overrides[key] = parse_value(value)
    return overrides


def _composed_value(run_dir: Path, key: str):
    """The value a run used for `key` without overriding it: a config group's choice from
    hydra.yaml, else the scalar at the dotted path of config.yaml; None when neither has it."""
    hydra_file, config_file = run_dir / ".hydra" / "hydra.yaml", run_dir / ".hydra" / "config.yaml"
    if hydra_file.is_file():
        choices = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("runtime", {}).get("choices", {})
        if key in choices and choices[key] is not None:
            return parse_value(str(choices[key]))
    if config_file.is_file():
        node = yaml.safe_load(config_file.read_text())
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        if node is None or isinstance(node, (int, float, str, bool)):
            return node
    return None


def read_error(run_dir: Path) -> str:
    """Why a run did not finish: the error its status.json records, else the last error line of its logs."""
    status_file = run_dir / "status.json"
    if status_file.is_file():
        try:
            status = json.loads(status_file.read_text())
            if status.get("error"):
                return str(status["error"])
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # a damaged status file says nothing; the logs may
    last = ""
    for log in sorted(run_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if re.search(r"(\w+(Error|Exception)\b:|\]\[ERROR\]|Error executing job)", line):
                last = line.strip()
    return last


def read_status(run_dir: Path) -> str:
    """How a run without metrics ended, from status.json (failed, interrupted, ...); failed if unknown."""
    try:
        return str(json.loads((run_dir / "status.json").read_text()).get("status") or "failed")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return "failed"


def read_metrics(run_dir: Path) -> tuple[dict, str, str]:
    """(metrics, status, error) of a run: "ok" with its metrics.json, "unreadable" when that file is
    damaged (the report goes on without the run's numbers), else what status.json says."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return {}, read_status(run_dir), read_error(run_dir)
    try:
        metrics = json.loads(metrics_file.read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"holds a {type(metrics).__name__}, not an object")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as error:
        return {}, "unreadable", f"metrics.json is unreadable ({error})"
    return metrics, "ok", ""


def collect_runs(roots: list[Path]) -> pd.DataFrame:
    """The runs table. `attrs['conditions']` lists the varying override columns and
    `attrs['metrics']` the metric columns (CSV round trips drop attrs; see `split_columns`)."""
    run_dirs = find_run_dirs(roots)
    if not run_dirs:
        raise ReportError(f"no runs found under {', '.join(str(r) for r in roots)}; allowed: directories "
                          "holding run directories (metrics.json or .hydra/), e.g. outputs/sweeps/<date>")
    overrides = {run_dir: read_overrides(run_dir) for run_dir in run_dirs}
    keys = sorted({key for values in overrides.values() for key in values})
    # A run that left a key at its default still ran some value of it: fill it from its config,
    # so a default run and an overriding sweep compare on that key.
    for run_dir, values in overrides.items():
        for key in keys:
            if key not in values:
                values[key] = _composed_value(run_dir, key)
    conditions = [key for key in keys if len({repr(values[key]) for values in overrides.values()}) > 1]

    rows, metric_names = [], {}
    for run_dir in run_dirs:
        row = {"run_dir": str(run_dir)}
        metrics, row["status"], row["error"] = read_metrics(run_dir)
        metric_names.update(dict.fromkeys(metrics))
        row.update({key: overrides[run_dir][key] for key in conditions})
        row.update(metrics)
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*BOOKKEEPING_COLUMNS, *conditions, *metric_names])
    if conditions:
        table = table.sort_values([*conditions, "run_dir"], kind="stable", key=_sortable).reset_index(drop=True)
    table.attrs["conditions"] = conditions
    table.attrs["metrics"] = list(metric_names)
    return table


def _sortable(column: pd.Series) -> pd.Series:
    """Numbers sort numerically; mixed columns (numbers and strings, None) sort as text."""
    numeric = pd.to_numeric(column, errors="coerce")
    return numeric if numeric.notna().sum() == column.notna().sum() else column.astype(str)


def split_columns(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(condition columns, metric columns) of a runs table, also one read back from runs.csv:
    metric keys of metrics.json contain '/' (or are `wall_time_s`), override keys do not."""
    if "conditions" in table.attrs and "metrics" in table.attrs:
        return list(table.attrs["conditions"]), list(table.attrs["metrics"])
    others = [c for c in table.columns if c not in BOOKKEEPING_COLUMNS]
    metrics = [c for c in others if "/" in c or c == "wall_time_s"]
    return [c for c in others if c not in metrics], metrics


def numeric_metrics(table: pd.DataFrame) -> list[str]:
    """The metric columns holding numbers (teacher/source, keys and checksums are text)."""
    _, metrics = split_columns(table)
    ok = table[table["status"] == "ok"]
    # seeds/* are the drawn seeds themselves, not outcomes: their mean means nothing.
    return [m for m in metrics if not m.startswith("seeds/")
            and pd.api.types.is_numeric_dtype(ok[m]) and ok[m].notna().any()]
