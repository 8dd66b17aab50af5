"""`kdrun-report DIR [DIR ...]`: tables, statistics, figures and an HTML / Markdown report of
finished runs. Reads run directories only (never trains), so it imports neither torch nor
Lightning and starts fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from kdrun.report.aggregate import (DEFAULT_SEED_COLUMNS, group_columns, select_best, select_metrics, summarize,
                                    summary_wide)
from kdrun.report.collect import collect_runs, split_columns
from kdrun.report.errors import ReportError
from kdrun.report.plots import PHI_CLASSES, PHI_COLORS
from kdrun.report.stats import (ALTERNATIVES, KAPPA_COLUMN, compare_conditions, correlations, higher_is_better,
                                kappa_stars, parse_assignments, teacher_bias_variance)

# Metrics the figures show when --metrics does not choose (those present in the runs).
FIGURE_METRICS = ("student/test/acc", "student/test/nll", "student/test/ece", "student/test/agreement")
AGREEMENT_SPLIT = ("student/test/agreement_teacher_correct", "student/test/agreement_teacher_incorrect")
SWITCH_COLUMN = "schedule.at"
ALPHA_COLUMN = "loss.alpha"
# paper 003's adversarial transfer: drawn against alpha whenever the runs measured it
PROBE_METRICS = ("student/test/probe_adversarial_rate", "student/test/probe_adversarial_prob")
MAX_REPRESENTATIVE_RUNS = 8  # per-run figures: one run per condition, bounded for large sweeps


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdrun-report", description="Report on finished kdrun runs: runs.csv, summary.csv, comparisons.csv, "
                                         "pairs.csv, figures/ and report.html / report.md.")
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run, sweep or output directories")
    parser.add_argument("--out", type=Path, help="output directory (default: <first DIR>/report)")
    parser.add_argument("--metrics", help="comma-separated metric names or globs, e.g. 'student/test/*' "
                                          "(default: every numeric metric; student metrics for comparisons)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="K=V", help="the runs under test, e.g. loss=kd")
    parser.add_argument("--against", nargs="+", default=[], metavar="K=V", help="the baseline runs, e.g. loss=ce")
    parser.add_argument("--pair-by", default="seed", help="comma-separated columns that pair runs (default: seed)")
    parser.add_argument("--alternative", default="greater", choices=ALTERNATIVES,
                        help="greater: compare is better than against (per metric direction); default greater")
    parser.add_argument("--seed-columns", default=",".join(DEFAULT_SEED_COLUMNS),
                        help="comma-separated columns (globs) averaged over (default: seed,seeds.*)")
    parser.add_argument("--select-by", metavar="METRIC",
                        help="select, per setting of the other conditions, the best mean of METRIC (e.g. "
                             "student/val/acc) and report its test metrics: selection.csv")
    parser.add_argument("--select-over", default="", metavar="COLS",
                        help="comma-separated condition columns to select over (default: all conditions)")
    parser.add_argument("--title", default="kdrun report", help="report title")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (faster)")
    parser.add_argument("--correlate", nargs="+", default=[], metavar="X:Y",
                        help="pairs of metrics to correlate over the runs (Spearman and Pearson, with p), e.g. "
                             "teacher/train/mse_to_bayes:student/test/auroc; each gets a scatter plot")
    parser.add_argument("--phi-color", default="correct", choices=PHI_COLORS,
                        help="what colours the phi scatters: correct (the student's top class is the label), noise "
                             "(the saved label-noise mask: mislabeled vs clean) or four_way (which of teacher and "
                             "student are correct); default: correct")
    parser.add_argument("--phi-on", default="teacher_top", choices=PHI_CLASSES,
                        help="the class whose probabilities the phi scatters plot: teacher_top (default) or "
                             "true_label (the clean label)")
    return parser


def _split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _default_comparison_metrics(table: pd.DataFrame, chosen: list[str]) -> list[str]:
    """The student's own quality and fidelity metrics: teacher metrics are shared by both sides,
    and sizes, steps and times are bookkeeping."""
    bookkeeping = ("params", "steps", "train_size", "wall_time_s")
    return [m for m in chosen if m.startswith("student/") and not m.endswith(bookkeeping)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = report(args)
    except ReportError as error:
        print(f"kdrun-report: {error}", file=sys.stderr)
        return 2
    out = written["out"]
    print(f"kdrun-report: wrote {len(written['files'])} files to {out}")
    for path in written["files"]:
        print(f"  {path.relative_to(out)}")
    return 0


def report(args: argparse.Namespace) -> dict:
    if bool(args.compare) != bool(args.against):
        raise ReportError("--compare and --against go together; allowed: both (e.g. --compare loss=kd "
                          "--against loss=ce) or neither")
    seed_columns = tuple(_split_list(args.seed_columns))
    table = collect_runs(args.dirs)
    out = args.out or Path(args.dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    files = []

    def save(frame: pd.DataFrame, name: str) -> None:
        frame.to_csv(out / name, index=False)
        files.append(out / name)

    save(table, "runs.csv")
    metric_patterns = _split_list(args.metrics)
    metrics = select_metrics(table, metric_patterns)
    summary = summarize(table, metrics, seed_columns)
    save(summary, "summary.csv")

    selection = pd.DataFrame()
    if args.select_by:
        reported = sorted(m for m in set(summary["metric"]) if m.startswith(("student/test/", "teacher/test/acc")))
        selection = select_best(summary, args.select_by, _split_list(args.select_over),
                                higher_is_better(args.select_by), reported)
        save(selection, "selection.csv")

    comparisons = pairs = stars = pd.DataFrame()
    if args.compare:
        compared = metrics if metric_patterns else _default_comparison_metrics(table, metrics)
        comparisons, pairs = compare_conditions(
            table, parse_assignments(args.compare, "--compare"), parse_assignments(args.against, "--against"),
            _split_list(args.pair_by), compared, args.alternative, seed_columns)
        stars = kappa_stars(comparisons)
    save(comparisons, "comparisons.csv")
    save(pairs, "pairs.csv")
    if not stars.empty:
        save(stars, "kappa_star.csv")
    bias_variance = teacher_bias_variance(table)
    correlated = correlations(table, [_metric_pair(item) for item in args.correlate],
                              group_columns(table, seed_columns))
    if not correlated.empty:
        save(correlated, "correlations.csv")

    figures = [] if args.no_figures else make_figures(table, metrics, args, seed_columns, out / "figures")
    files += [path for _, path in figures]
    files += render_report(out, args.title, table, summary, comparisons, stars, bias_variance, figures,
                           metrics if metric_patterns else _default_comparison_metrics(table, metrics), selection,
                           correlated)
    return {"out": out, "files": files}


def _metric_pair(item: str) -> tuple[str, str]:
    x, separator, y = item.partition(":")
    if not separator or not x or not y:
        raise ReportError(f"--correlate {item!r}; allowed: X:Y, two metric names, e.g. "
                          f"teacher/train/mse_to_bayes:student/test/auroc")
    return x, y


def _condition_labels(table: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One text label per run naming its condition, e.g. 'loss=kd, data.kappa=0.5', as short as still
    tells the conditions apart: a setting a run does not have (NaN, e.g. loss.alpha of a ce run) is left
    out, and so is a column the others already determine (e.g. the preset's name when each of two
    sweeps' presets sets a different loss)."""
    if not columns:
        return pd.Series("all runs", index=table.index)
    text = table[columns].astype(str).where(table[columns].notna())

    def distinct(chosen: list[str]) -> int:
        return len(text[chosen].fillna("").drop_duplicates())

    needed = list(columns)
    for column in sorted(columns, key=lambda c: c != "experiment"):  # the long preset name goes first
        rest = [c for c in needed if c != column]
        if rest and distinct(rest) == distinct(needed):
            needed = rest
    return text[needed].apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items() if isinstance(v, str)) or
                              "all runs", axis=1)


def make_figures(table: pd.DataFrame, metrics: list[str], args, seed_columns, folder: Path) -> list[tuple[str, Path]]:
    """The figures that fit what varies; a figure that fails is reported and skipped, so the tables
    and the rest of the report are still written."""
    try:
        from kdrun.report import plots
    except ImportError as error:
        print(f"kdrun-report: warning: no figures ({error})", file=sys.stderr)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    ok = table[table["status"] == "ok"].copy()
    conditions, _ = split_columns(table)
    grouping = group_columns(table, seed_columns)
    shown = [m for m in (metrics if args.metrics else FIGURE_METRICS) if m in metrics][:8]
    figures: list[tuple[str, Path]] = []

    def attempt(caption: str, draw, *arguments, **keywords) -> None:
        try:
            figures.append((caption, draw(*arguments, **keywords)))
        except Exception as error:  # noqa: BLE001  one bad figure must not lose the report
            print(f"kdrun-report: warning: figure {caption!r} skipped: {error}", file=sys.stderr)

    for axis, draw, name in ((KAPPA_COLUMN, plots.metric_vs_kappa, "kappa"),
                             (SWITCH_COLUMN, plots.metric_vs_switch_point, "switch")):
        if axis not in conditions:
            continue
        ok["condition"] = _condition_labels(ok, [c for c in grouping if c != axis])
        for metric in shown:
            path = folder / f"{_file_name(metric)}_vs_{name}.png"
            if axis == KAPPA_COLUMN:
                attempt(f"{metric} against {axis}", draw, ok, metric, "condition", path, kappa_column=axis)
            else:
                attempt(f"{metric} against {axis}", draw, ok, metric, path, at_column=axis, condition="condition")

    if ALPHA_COLUMN in conditions:  # e.g. paper 003's KD and RCD over alpha, SIDDO as the level without alpha
        ok["condition"] = _condition_labels(ok, [c for c in grouping if c != ALPHA_COLUMN])
        probe = [m for m in PROBE_METRICS if m in ok.columns and m not in shown]
        for metric in [*shown, *probe]:
            attempt(f"{metric} against {ALPHA_COLUMN}", plots.metric_vs_alpha, ok, metric, "condition",
                    folder / f"{_file_name(metric)}_vs_alpha.png", alpha_column=ALPHA_COLUMN)

    ok["condition"] = _condition_labels(ok, grouping)
    if all(column in ok.columns for column in AGREEMENT_SPLIT):
        baseline = None
        if args.against:
            # the labels of the whole table: a subset's own labels could leave out other columns
            against = ok.loc[_matching(ok, parse_assignments(args.against, "--against")), "condition"]
            baseline = against.iloc[0] if len(against) and against.nunique() == 1 else None
        attempt("agreement with the teacher, split by the teacher's correctness", plots.agreement_split_bars,
                ok, "condition", folder / "agreement_split.png", baseline=baseline)

    for index, item in enumerate(args.correlate):
        x, y = _metric_pair(item)
        attempt(f"{y} against {x}, one point per run", plots.correlation_scatter, ok, x, y,
                folder / f"correlation_{index}.png", condition="condition")

    representatives = ok[[(Path(run) / "predictions.npz").is_file() for run in ok["run_dir"]]]
    representatives = representatives.drop_duplicates("condition").head(MAX_REPRESENTATIVE_RUNS)
    for index, (label, run_dir) in enumerate(zip(representatives["condition"], representatives["run_dir"])):
        predictions = Path(run_dir) / "predictions.npz"
        attempt(f"phi scatter (train, coloured by {args.phi_color}), {label}", plots.phi_scatter, predictions,
                folder / f"phi_{index}.png", color_by=args.phi_color, on=args.phi_on)
        attempt(f"reliability diagram (test), {label}", plots.reliability_diagram, predictions,
                folder / f"reliability_{index}.png")
    return figures


def _matching(runs: pd.DataFrame, assignments: dict) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for key, value in assignments.items():
        mask &= runs[key].astype(str) == str(value)
    return mask


def _file_name(metric: str) -> str:
    return metric.replace("/", "_")


def render_report(out: Path, title: str, table, summary, comparisons, stars, bias_variance,
                  figures, report_metrics: list[str], selection: pd.DataFrame | None = None,
                  correlated: pd.DataFrame | None = None) -> list[Path]:
    from kdrun.report.render import Section, write_report

    conditions, _ = split_columns(table)
    failed = table[table["status"] != "ok"]
    ended = ", ".join(f"{count} {status}" for status, count in failed["status"].value_counts().sort_index().items())
    runs_text = (f"{len(table)} runs ({len(table) - len(failed)} ok{', ' + ended if ended else ''}). "
                 f"Varying: {', '.join(conditions) or 'nothing'}.")
    sections = [Section("Runs", runs_text, tables=[("Runs", table[["run_dir", "status", *conditions]])]
                        + ([("Runs without results (failed, interrupted or unreadable)",
                             failed[["run_dir", "status", *conditions, "error"]])] if len(failed) else []))]
    # The report shows the outcomes; summary.csv keeps every metric.
    shown = summary[summary["metric"].isin(report_metrics)] if report_metrics else summary
    sections.append(Section("Summary", "Mean ± std (ddof=1) over seeds, n runs per condition; every metric "
                            "is in summary.csv.", tables=[("Summary", summary_wide(shown))]))
    if selection is not None and not selection.empty:
        sections.append(Section("Selection", f"The setting with the best mean {selection['selected_by'].iloc[0]} "
                                "(selected on validation), with its test metrics.",
                                tables=[("Selection", selection)]))
    if not comparisons.empty:
        first = comparisons.iloc[0]
        text = (f"{first['compare']} against {first['against']}, paired runs. PI = mean(compare) − mean(against); "
                "PG = mean(compare) / mean(against); improvement = PI signed so that positive is better "
                "(higher_is_better says which way a metric reads). p: Wilcoxon signed-rank and paired t-test "
                "on the pairs (tested_alternative: scipy's alternative for compare − against); q: Benjamini–Hochberg over the metrics of each group.")
        tables = [("Comparisons", comparisons)]
        if not stars.empty:
            tables.append(("κ*: where compare and against cross (PG = 1), linear interpolation; empty if they "
                           "never cross", stars))
        sections.append(Section("Comparisons", text, tables=tables))
    if correlated is not None and not correlated.empty:
        sections.append(Section("Correlations", "Over the runs that have both metrics: Spearman's rank correlation "
                                "and Pearson's r, each with its two-sided p (scipy.stats).",
                                tables=[("Correlations", correlated)]))
    if bias_variance:
        sections.append(Section("Teacher bias and variance", "MSE of the teacher draws to the Bayes "
                                "probabilities, mse = bias2 + variance.",
                                tables=[("Bias-variance", pd.DataFrame([bias_variance]))]))
    if figures:
        sections.append(Section("Figures", figures=figures))
    return list(write_report(out, title, sections))
