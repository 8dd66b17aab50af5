"""Paired comparisons of two conditions (e.g. loss=kd against loss=ce, paired by seed).

Per comparison group (the other varying columns, e.g. one group per kappa) and metric:
n pairs, the mean of each side, PI = mean(compare) − mean(against), PG = mean(compare) /
mean(against), a one-sided Wilcoxon signed-rank p and a paired t-test p, and the
Benjamini–Hochberg q over the metrics of the group (the family).

Direction: `alternative` is stated in terms of improvement, because metrics disagree on which
way is better. 'greater' tests "compare is better than against": compare > against for
higher-is-better metrics and compare < against for lower-is-better ones (nll, ece, kl, js,
disagreement, distance, mse, ...); 'less' tests "compare is worse"; 'two-sided' any
difference. The column `higher_is_better` says which way each metric reads, `improvement`
is PI signed so that positive is better, and `tested_alternative` is the alternative scipy was
given for compare − against (greater, less or two-sided).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from kdrun.report.aggregate import DEFAULT_SEED_COLUMNS, group_columns
from kdrun.report.collect import parse_value, split_columns
from kdrun.report.errors import ReportError

ALTERNATIVES = ("greater", "less", "two-sided")
LOWER_IS_BETTER = re.compile(r"(nll|ece|kl|js|disagreement|distance|mse|bias2|variance|loss|error|wall_time)")
KAPPA_COLUMN = "data.kappa"


def higher_is_better(metric: str) -> bool:
    return LOWER_IS_BETTER.search(metric.rsplit("/", 1)[-1]) is None


def parse_assignments(items: list[str], option: str) -> dict:
    """['loss=kd', 'data.kappa=0.5'] -> {'loss': 'kd', 'data.kappa': 0.5}."""
    assignments = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ReportError(f"{option} {item!r} is not key=value; allowed: e.g. {option} loss=kd")
        assignments[key.strip()] = parse_value(value)
    return assignments


def select_runs(table: pd.DataFrame, assignments: dict, option: str) -> pd.DataFrame:
    """The ok runs matching every key=value; errors name a key that is not a column or a value no run has."""
    conditions, _ = split_columns(table)
    ok = table[table["status"] == "ok"]
    mask = pd.Series(True, index=ok.index)
    for key, value in assignments.items():
        if key not in conditions:
            raise ReportError(f"{option} {key}={value}: {key!r} is not a varying column of these runs; "
                              f"allowed: {', '.join(conditions) or '(nothing varies)'}")
        column = ok[key]
        matches = column.astype(str) == str(value)
        if isinstance(value, (int, float)):
            matches |= pd.to_numeric(column, errors="coerce") == value
        if not matches.any():
            present = ", ".join(str(v) for v in pd.unique(column))
            raise ReportError(f"{option} {key}={value} matches no run; allowed values of {key}: {present}")
        mask &= matches
    if not mask.any():
        raise ReportError(f"{option} {' '.join(f'{k}={v}' for k, v in assignments.items())} matches no run "
                          "(each value exists, but not together)")
    return ok[mask]


def benjamini_hochberg(p_values) -> np.ndarray:
    """BH-adjusted q values (NaN stays NaN and is outside the family):
    q_(i) = min_{j >= i} p_(j) m / j over the sorted p, capped at 1."""
    p = np.asarray(p_values, dtype=float)
    q = np.full_like(p, np.nan)
    present = ~np.isnan(p)
    if present.any():
        q[present] = _false_discovery_control(p[present])
    return q


def _benjamini_hochberg_by_hand(p: np.ndarray) -> np.ndarray:
    m = len(p)
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    q = np.empty(m)
    q[order] = adjusted
    return q


_false_discovery_control = getattr(scipy_stats, "false_discovery_control", _benjamini_hochberg_by_hand)


def _scipy_alternative(alternative: str, metric: str) -> str:
    """The scipy alternative on compare − against for a hypothesis stated as improvement."""
    if alternative == "two-sided" or higher_is_better(metric):
        return alternative
    return "less" if alternative == "greater" else "greater"


def wilcoxon_p(compare, against, alternative: str) -> tuple[float, str]:
    """(p, method) of the Wilcoxon signed-rank test on the pairs; exact when n <= 50 and the
    differences have no zeros and no ties (where the exact null distribution holds), else the
    normal approximation with zeros dropped. NaN when every difference is zero."""
    differences = np.asarray(compare, dtype=float) - np.asarray(against, dtype=float)
    if len(differences) == 0 or np.all(differences == 0):
        return float("nan"), "none"
    magnitudes = np.abs(differences[differences != 0])
    exact = len(differences) <= 50 and np.all(differences != 0) and len(np.unique(magnitudes)) == len(magnitudes)
    method = "exact" if exact else "approx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scipy_stats.wilcoxon(compare, against, alternative=alternative, method=method)
    return float(result.pvalue), method


def ttest_p(compare, against, alternative: str) -> float:
    """Paired t-test p; NaN below two pairs or when the differences are constant."""
    if len(compare) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(scipy_stats.ttest_rel(compare, against, alternative=alternative).pvalue)


def pair_runs(table: pd.DataFrame, compare: dict, against: dict, pair_by: list[str], metrics: list[str],
              seed_columns=DEFAULT_SEED_COLUMNS) -> tuple[pd.DataFrame, list[str]]:
    """The long pairs table (one row per group, pair and metric) and the group columns."""
    conditions, _ = split_columns(table)
    for column in pair_by:
        if column not in conditions:
            raise ReportError(f"--pair-by {column!r} is not a varying column of these runs; "
                              f"allowed: {', '.join(conditions) or '(nothing varies)'}")
    compared = select_runs(table, compare, "--compare")
    baseline = select_runs(table, against, "--against")
    overlap = compared.index.intersection(baseline.index)
    if len(overlap):
        raise ReportError(f"--compare and --against both select {len(overlap)} run(s), e.g. "
                          f"{table.loc[overlap[0], 'run_dir']}; allowed: two disjoint sets of runs")
    # A column whose values the two sides do not share tells the sides apart (the experiment preset
    # of each arm; loss.alpha, which cross-entropy lacks; loss.epsilon_file): it cannot group pairs.
    groups = [column for column in group_columns(table, seed_columns, exclude={*compare, *against, *pair_by})
              if set(compared[column].dropna()) & set(baseline[column].dropna())]
    keys = [*groups, *pair_by]
    for side, runs in (("--compare", compared), ("--against", baseline)):
        duplicated = runs[runs.duplicated(keys, keep=False)]
        if len(duplicated):
            raise ReportError(f"{side} has {len(duplicated)} runs sharing one pair key ({', '.join(keys)}), e.g. "
                              f"{', '.join(duplicated['run_dir'].head(2))}; allowed: one run per pair "
                              "(add the column that tells them apart to --compare/--against or --pair-by)")
    merged = compared[[*keys, "run_dir", *metrics]].merge(
        baseline[[*keys, "run_dir", *metrics]], on=keys, suffixes=("@compare", "@against"))
    if merged.empty:
        raise ReportError(f"no pairs: the --compare and --against runs share no value of {', '.join(keys)}; "
                          f"compare has {_key_values(compared, keys)}, against has {_key_values(baseline, keys)}")
    rows = []
    for _, pair in merged.iterrows():
        for metric in metrics:
            c, a = pair[f"{metric}@compare"], pair[f"{metric}@against"]
            if pd.isna(c) or pd.isna(a):
                continue
            rows.append({**{k: pair[k] for k in keys}, "metric": metric, "compare": float(c), "against": float(a),
                         "difference": float(c) - float(a), "compare_run": pair["run_dir@compare"],
                         "against_run": pair["run_dir@against"]})
    pairs = pd.DataFrame(rows, columns=[*keys, "metric", "compare", "against", "difference",
                                        "compare_run", "against_run"])
    pairs.attrs["unpaired"] = {side: _unpaired(runs, merged, keys) for side, runs in
                               (("compare", compared), ("against", baseline))}
    return pairs, groups


def _key_values(runs: pd.DataFrame, keys: list[str]) -> str:
    values = runs[keys].drop_duplicates().head(5).to_dict("records")
    return "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in values)


def _unpaired(runs: pd.DataFrame, merged: pd.DataFrame, keys: list[str]) -> list[str]:
    """run_dirs of a side without a partner (reported, not an error: a failed job loses one pair)."""
    paired = set(map(tuple, merged[keys].astype(str).to_numpy()))
    return [run for run, key in zip(runs["run_dir"], map(tuple, runs[keys].astype(str).to_numpy()))
            if key not in paired]


def compare_conditions(table: pd.DataFrame, compare: dict, against: dict, pair_by: list[str],
                       metrics: list[str], alternative: str = "greater",
                       seed_columns=DEFAULT_SEED_COLUMNS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparisons, pairs): one comparisons row per group and metric, see the module doc."""
    if alternative not in ALTERNATIVES:
        raise ReportError(f"--alternative {alternative!r}; allowed: {', '.join(ALTERNATIVES)}")
    pairs, groups = pair_runs(table, compare, against, pair_by, metrics, seed_columns)
    label = {"compare": " ".join(f"{k}={v}" for k, v in compare.items()),
             "against": " ".join(f"{k}={v}" for k, v in against.items())}
    rows = []
    grouped = pairs.groupby([*groups, "metric"], dropna=False, sort=False)
    for key, group in grouped:
        key = key if isinstance(key, tuple) else (key,)
        metric = key[-1]
        c, a, d = group["compare"].to_numpy(), group["against"].to_numpy(), group["difference"].to_numpy()
        tested = _scipy_alternative(alternative, metric)
        p_wilcoxon, method = wilcoxon_p(c, a, tested)
        better = higher_is_better(metric)
        pi = float(c.mean() - a.mean())
        rows.append({**dict(zip(groups, key[:-1])), "metric": metric, **label, "n": len(d),
                     "mean_compare": float(c.mean()), "mean_against": float(a.mean()),
                     "pi": pi, "pg": float(c.mean() / a.mean()) if a.mean() != 0 else float("nan"),
                     "pi_sem": float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan"),
                     "higher_is_better": better, "improvement": pi if better else -pi,
                     "tested_alternative": tested,
                     "wilcoxon_p": p_wilcoxon, "wilcoxon_method": method, "ttest_p": ttest_p(c, a, tested)})
    comparisons = pd.DataFrame(rows)
    # The family for the FDR: every metric compared within one group (e.g. one kappa).
    for column in ("wilcoxon", "ttest"):
        comparisons[f"{column}_q"] = np.nan
        families = comparisons.groupby(groups, dropna=False, sort=False).groups.values() if groups \
            else [comparisons.index]
        for index in families:
            comparisons.loc[index, f"{column}_q"] = benjamini_hochberg(comparisons.loc[index, f"{column}_p"])
    return comparisons, pairs


def kappa_star(kappas, compare_means, against_means) -> float | None:
    """The kappa where the compare and against curves cross (PG = 1), by linear interpolation
    between adjacent kappas of the difference; the first crossing, None when they never do."""
    order = np.argsort(np.asarray(kappas, dtype=float))
    kappa = np.asarray(kappas, dtype=float)[order]
    difference = (np.asarray(compare_means, dtype=float) - np.asarray(against_means, dtype=float))[order]
    for i in range(len(kappa)):
        if difference[i] == 0:
            return float(kappa[i])
        if i + 1 < len(kappa) and difference[i] * difference[i + 1] < 0:
            fraction = difference[i] / (difference[i] - difference[i + 1])
            return float(kappa[i] + fraction * (kappa[i + 1] - kappa[i]))
    return None


def kappa_stars(comparisons: pd.DataFrame, kappa_column: str = KAPPA_COLUMN) -> pd.DataFrame:
    """kappa* per metric (and per setting of the other group columns) of a comparison over kappa."""
    if comparisons.empty or kappa_column not in comparisons.columns:
        return pd.DataFrame(columns=["metric", "kappa_star"])
    before_metric = list(comparisons.columns[:list(comparisons.columns).index("metric")])
    others = [c for c in before_metric if c != kappa_column]
    rows = []
    for key, curve in comparisons.groupby([*others, "metric"], dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        kappas = pd.to_numeric(curve[kappa_column], errors="coerce")
        rows.append({**dict(zip([*others, "metric"], key)), "kappas": len(curve),
                     "kappa_star": kappa_star(kappas, curve["mean_compare"], curve["mean_against"])})
    return pd.DataFrame(rows)


def teacher_bias_variance(table: pd.DataFrame, split: str = "test") -> dict | None:
    """mse = bias2 + variance of the distinct teachers found (one draw per teacher/key) to the
    Bayes probabilities, where runs stored `<split>_oracle_probs`; None when that is not possible
    (no oracle probabilities, fewer than two teachers, or kdrun.metrics without the function)."""
    if "teacher/key" not in table.columns:
        return None
    draws, bayes, index = {}, None, None
    for _, run in table[table["status"] == "ok"].iterrows():
        path = Path(run["run_dir"]) / "predictions.npz"
        if run["teacher/key"] in draws or not path.is_file():
            continue
        with np.load(path) as stored:
            if f"{split}_oracle_probs" not in stored:
                continue
            if index is not None and not np.array_equal(stored[f"{split}_index"], index):
                continue  # another sample set: the draws must predict the same inputs
            logits = stored[f"{split}_teacher_logits"].astype(np.float64)
            bayes, index = stored[f"{split}_oracle_probs"], stored[f"{split}_index"]
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        draws[run["teacher/key"]] = shifted / shifted.sum(-1, keepdims=True)
    if len(draws) < 2:
        return None
    try:  # imported only now: kdrun.metrics brings torch, which most reports never need
        from kdrun.metrics import bias_variance_decomposition
    except ImportError:
        return None
    return {"split": split, "teachers": len(draws),
            **bias_variance_decomposition(np.stack(list(draws.values())), bayes)}


def correlations(table: pd.DataFrame, pairs: list[tuple[str, str]], conditions: list[str] = ()) -> pd.DataFrame:
    """Per (x, y) pair of metrics: Spearman's rho and Pearson's r with their two-sided p, over the runs that
    have both and, when `conditions` are given, over the conditions' means (seeds pooled): e.g. paper 001's
    teacher MSE to p* against the student's AUC, paper 002's fidelity against the student's accuracy."""
    ok = table[table["status"] == "ok"]
    rows = []
    for x, y in pairs:
        missing = [column for column in (x, y) if column not in ok.columns]
        if missing:
            raise ReportError(f"--correlate {x}:{y}: no runs have {', '.join(missing)}; allowed: metric columns "
                              f"of runs.csv")
        both = ok[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(both) < 3 or both[x].nunique() < 2 or both[y].nunique() < 2:
            raise ReportError(f"--correlate {x}:{y}: {len(both)} runs have both, and both must vary; allowed: "
                              f"metrics that vary over at least 3 runs")
        rows.append(_correlation_row(x, y, "runs", both[x], both[y]))
        if conditions:
            means = ok.assign(**{x: pd.to_numeric(ok[x], errors="coerce"), y: pd.to_numeric(ok[y], errors="coerce")}) \
                .groupby(list(conditions), dropna=False)[[x, y]].mean().dropna()
            if len(means) >= 3 and means[x].nunique() > 1 and means[y].nunique() > 1:
                rows.append(_correlation_row(x, y, "condition means", means[x], means[y]))
    return pd.DataFrame(rows, columns=["x", "y", "over", "n", "spearman_rho", "spearman_p", "pearson_r", "pearson_p"])


def _correlation_row(x: str, y: str, over: str, xs: pd.Series, ys: pd.Series) -> dict:
    spearman, pearson = scipy_stats.spearmanr(xs, ys), scipy_stats.pearsonr(xs, ys)
    return {"x": x, "y": y, "over": over, "n": len(xs), "spearman_rho": float(spearman.statistic),
            "spearman_p": float(spearman.pvalue), "pearson_r": float(pearson.statistic),
            "pearson_p": float(pearson.pvalue)}
