"""Figures of `kdrun-report`, each written as a PNG at 150 dpi.

- `phi_scatter`: per-sample φ(teacher prob) vs φ(student prob) on one class, from predictions.npz;
- `reliability_diagram`: confidence vs accuracy of teacher and student, from predictions.npz;
- `metric_vs_kappa`, `metric_vs_switch_point`: a metric's mean ± SEM over runs, from the run table;
- `agreement_split_bars`: agreement with the teacher where it is right vs where it is wrong.

Figures are drawn on a bare `matplotlib.figure.Figure` (never pyplot), so nothing depends on
a display or on a global backend, and no figure outlives its function.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

DPI = 150
AGREEMENT_CORRECT = "student/test/agreement_teacher_correct"
AGREEMENT_INCORRECT = "student/test/agreement_teacher_incorrect"
# Colour-blind-safe pairs (Okabe-Ito), used wherever two groups are contrasted.
BLUE, ORANGE, GREEN, VERMILLION, GREY = "#0072B2", "#E69F00", "#009E73", "#D55E00", "#7f7f7f"
MARKERS = "osD^vP*Xph"


# --------------------------------------------------------------------------------------------
# per-sample quantities


def phi_of_class(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """φ(p_j) = log(p_j / (1 − p_j)) for class j = `classes[n]` of each row of `logits`.

    Computed as f_j − logsumexp_{i≠j} f_i, an exact identity that stays finite where the
    softmax probability rounds to 1 (φ would be +inf from the probability)."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(logits))
    own = logits[rows, classes]
    others = logits.copy()
    others[rows, classes] = -np.inf
    peak = others.max(axis=1)
    log_rest = peak + np.log(np.exp(others - peak[:, None]).sum(axis=1))
    return own - log_rest


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def calibration_bins(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Top-label confidence, accuracy and count per equal-width confidence bin, and the ECE.

    Bin b holds confidences in (b/B, (b+1)/B], as the run's own `ece` metric counts them.
    The ECE (L1) is returned in `frame.attrs["ece"]`."""
    probs = softmax(logits)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / count
    frame = pd.DataFrame({"low": edges[:-1], "high": edges[1:], "confidence": mean_confidence,
                          "accuracy": accuracy, "count": count})
    filled = count > 0
    frame.attrs["ece"] = float(np.sum(np.abs(accuracy[filled] - mean_confidence[filled]) * count[filled])
                               / max(len(confidence), 1))
    return frame


def _load_predictions(path: Path, split: str, extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such predictions file")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    needed = [f"{split}_{name}" for name in ("label", "teacher_logits", "student_logits", *extra)]
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)} (split {split!r}); "
                         f"it holds: {', '.join(sorted(arrays)) or 'nothing'}")
    return arrays


# --------------------------------------------------------------------------------------------
# run-table helpers


def _require_columns(table: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{what}: the table has no column {', '.join(repr(c) for c in missing)}; "
                         f"its columns are: {', '.join(map(str, table.columns)) or 'none'}")


def _sort_key(value):
    """Numbers in numeric order before anything else, then the rest as text with its numbers compared
    as numbers ('epochs=2' before 'epochs=10')."""
    try:
        return (0, float(value), ())
    except (TypeError, ValueError):
        # re.split with a group alternates text (even places) and numbers (odd places), so the
        # places of two keys always hold comparable types
        parts = re.split(r"(\d+(?:\.\d+)?)", str(value))
        return (1, 0.0, tuple(float(part) if index % 2 else part for index, part in enumerate(parts)))


def _label(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sem(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def _numeric(table: pd.DataFrame, column: str, what: str) -> pd.Series:
    try:
        return pd.to_numeric(table[column])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: column {column!r} must be numeric ({error})") from None


def _summarise(table: pd.DataFrame, metric: str, x_column: str, condition: str | None,
               what: str) -> pd.DataFrame:
    """Mean, SEM and n of `metric` per (condition, x), over the runs that have the metric."""
    columns = [metric, x_column] + ([condition] if condition else [])
    _require_columns(table, columns, what)
    frame = pd.DataFrame({"x": _numeric(table, x_column, what), "y": _numeric(table, metric, what),
                          "group": table[condition].astype(object) if condition else "all runs"})
    frame = frame.dropna(subset=["x", "y"])
    frame["group"] = frame["group"].where(frame["group"].notna(), "(unset)")
    if frame.empty:
        raise ValueError(f"{what}: no run has both {metric!r} and {x_column!r}")
    summary = (frame.groupby(["group", "x"], sort=False)["y"]
               .agg(mean="mean", sem=_sem, n="count").reset_index())
    return summary


def _new_figure(width: float = 7.0, height: float = 4.6):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(figure, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI, format="png")
    return out


def _place_legend(figure, axes, entries: int, title: str | None = None) -> None:
    # Many lines would hide data inside the axes; beyond a handful the legend goes outside.
    if entries > 5:
        figure.legend(*axes.get_legend_handles_labels(), loc="outside right upper", title=title,
                      fontsize="small", title_fontsize="small")
    else:
        axes.legend(loc="best", title=title, fontsize="small", title_fontsize="small")


def _metric_lines(summary: pd.DataFrame, metric: str, out: Path, xlabel: str, title: str,
                  legend_title: str | None, log_x: bool, references=()) -> Path:
    """Mean ± SEM lines per group; `references` (label, mean, sem, n) are dashed horizontal levels."""
    figure = _new_figure()
    axes = figure.add_subplot()
    groups = sorted(summary["group"].unique(), key=_sort_key)
    colours = [f"C{i % 10}" for i in range(len(groups))]
    for i, group in enumerate(groups):
        rows = summary[summary["group"] == group].sort_values("x")
        n_text = f"n={rows['n'].min()}" if rows["n"].min() == rows["n"].max() \
            else f"n={rows['n'].min()}–{rows['n'].max()}"
        label = f"{_label(group)} ({n_text})" if legend_title else n_text
        axes.errorbar(rows["x"], rows["mean"], yerr=rows["sem"], label=label, color=colours[i],
                      marker=MARKERS[i % len(MARKERS)], markersize=5, capsize=3, linewidth=1.5)
    for j, (label, level, spread, count) in enumerate(references):
        colour = f"C{(len(groups) + j) % 10}"
        axes.axhline(level, color=colour, linestyle="--", linewidth=1.2, label=f"{_label(label)} (n={count})")
        if spread == spread:  # not NaN (one run has no SEM)
            axes.axhspan(level - spread, level + spread, color=colour, alpha=0.12)
    if log_x:
        # Decade ticks alone (10^-1, 10^0) hide which κ were run; label the run values instead.
        from matplotlib.ticker import FixedLocator, NullLocator

        axes.set_xscale("log")
        values = sorted(summary["x"].unique())
        axes.xaxis.set_major_locator(FixedLocator(values))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.set_xticks(values, [f"{value:g}" for value in values])
        if len(values) > 8:
            axes.tick_params(axis="x", labelrotation=45)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(metric)
    dashed = "; dashed: runs without this axis" if references else ""
    axes.set_title(f"{title}\n(mean ± 1 SEM over runs{dashed})", fontsize="medium")
    axes.grid(True, alpha=0.3)
    _place_legend(figure, axes, len(groups) + len(references), legend_title)
    return _save(figure, out)


# --------------------------------------------------------------------------------------------
# figures from the run table


def metric_vs_kappa(table: pd.DataFrame, metric: str, condition: str, out: Path,
                    kappa_column: str = "data.kappa") -> Path:
    """`metric` vs κ = M/N, one line per value of `condition`; mean ± SEM over the runs at each
    (condition, κ). κ is drawn on a log axis when it spans more than a decade."""
    what = f"metric_vs_kappa({metric!r})"
    summary = _summarise(table, metric, kappa_column, condition, what)
    kappas = summary["x"]
    log_x = bool((kappas > 0).all() and kappas.max() / kappas.min() > 10)
    return _metric_lines(summary, metric, out, xlabel=f"κ = M/N  ({kappa_column})",
                         title=f"{metric} vs κ, by {condition}", legend_title=condition, log_x=log_x)


def metric_vs_switch_point(table: pd.DataFrame, metric: str, out: Path,
                           at_column: str = "schedule.at", condition: str | None = None) -> Path:
    """`metric` vs the step (or fraction of training) at which the loss schedule switches;
    mean ± SEM over runs, one line per value of `condition` if given."""
    what = f"metric_vs_switch_point({metric!r})"
    summary = _summarise(table, metric, at_column, condition, what)
    at = summary["x"]
    unit = "fraction of training steps" if at.between(0, 1).all() else "training step"
    title = f"{metric} vs switch point" + (f", by {condition}" if condition else "")
    return _metric_lines(summary, metric, out, xlabel=f"switch point: {unit}  ({at_column})",
                         title=title, legend_title=condition, log_x=False)


def metric_vs_alpha(table: pd.DataFrame, metric: str, condition: str, out: Path,
                    alpha_column: str = "loss.alpha") -> Path:
    """`metric` vs the teacher's weight alpha, one line per value of `condition` (e.g. KD against RCD);
    runs without an alpha (the SIDDO control, trained with CE) are dashed reference levels (mean ± SEM),
    so a transfer that grows with alpha shows against the controls (paper 003 Sec. 4.5)."""
    what = f"metric_vs_alpha({metric!r})"
    _require_columns(table, [metric, condition, alpha_column], what)
    has_alpha = pd.to_numeric(table[alpha_column], errors="coerce").notna()
    summary = _summarise(table[has_alpha], metric, alpha_column, condition, what)
    others = table[~has_alpha].assign(_y=pd.to_numeric(table.loc[~has_alpha, metric], errors="coerce"))
    references = [(label, runs["_y"].mean(), _sem(runs["_y"]), len(runs))
                  for label, runs in others.dropna(subset=["_y"]).groupby(condition, sort=False)]
    return _metric_lines(summary, metric, out, xlabel=f"teacher weight α  ({alpha_column})",
                         title=f"{metric} vs α, by {condition}", legend_title=condition, log_x=False,
                         references=references)


def correlation_scatter(table: pd.DataFrame, x: str, y: str, out: Path, condition: str | None = None) -> Path:
    """One point per run of metric `y` against metric `x`, coloured by `condition`, with the least-squares line."""
    what = "correlation_scatter"
    _require_columns(table, [x, y] + ([condition] if condition else []), what)
    frame = table.assign(**{x: _numeric(table, x, what), y: _numeric(table, y, what)}).dropna(subset=[x, y])
    figure = _new_figure(width=6.4, height=4.8)
    axes = figure.add_subplot()
    groups = sorted(frame[condition].unique(), key=_sort_key) if condition else [None]
    for index, group in enumerate(groups):
        part = frame if group is None else frame[frame[condition] == group]
        # "teacher.oracle_options.bias=0.2, ..." -> "bias=0.2, ...": the legend names only the setting
        label = None if group is None else re.sub(r"(?:[\w/]+\.)+(\w+=)", r"\1", _label(group))
        axes.scatter(part[x], part[y], s=18, alpha=0.8, color=f"C{index % 10}", marker=MARKERS[index % len(MARKERS)],
                     label=label, linewidths=0)
    if len(frame) >= 2 and frame[x].nunique() > 1:
        slope, intercept = np.polyfit(frame[x], frame[y], 1)
        xs = np.linspace(frame[x].min(), frame[x].max(), 50)
        axes.plot(xs, slope * xs + intercept, color="0.3", linewidth=1, linestyle="--", label="least squares")
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    _place_legend(figure, axes, len(groups) + 1)
    return _save(figure, out)


def agreement_split_bars(table: pd.DataFrame, condition: str, out: Path, baseline: str | None = None,
                         pair_on: str | None = None) -> Path:
    """Mean test agreement with the teacher on teacher-correct and teacher-incorrect inputs per
    value of `condition`, ± SEM over runs.

    With `baseline` (a value of `condition`) the bars are Δ = condition − baseline. The SEM of
    Δ is then that of the paired differences when `pair_on` names the column that pairs runs
    (e.g. the student seed), else sqrt(SEM_condition² + SEM_baseline²)."""
    what = "agreement_split_bars"
    metrics = [AGREEMENT_CORRECT, AGREEMENT_INCORRECT]
    _require_columns(table, [condition, *metrics] + ([pair_on] if pair_on else []), what)
    frame = table.copy()
    for metric in metrics:
        frame[metric] = _numeric(frame, metric, what)
    frame = frame.dropna(subset=[condition])
    groups = sorted(frame[condition].unique(), key=_sort_key)
    if not groups:
        raise ValueError(f"{what}: no run has a value for {condition!r}")

    rows = []
    if baseline is None:
        for group in groups:
            chosen = frame[frame[condition] == group]
            rows.append([group] + [(chosen[m].mean(), _sem(chosen[m]), chosen[m].count()) for m in metrics])
    else:
        # The baseline arrives as text from the command line; condition values may be numbers.
        matches = [group for group in groups if _label(group) == str(baseline) or group == baseline]
        if not matches:
            raise ValueError(f"{what}: baseline {baseline!r} is not a value of {condition!r}; "
                             f"its values are: {', '.join(_label(g) for g in groups)}")
        base = frame[frame[condition] == matches[0]]
        for group in groups:
            if group == matches[0]:
                continue
            chosen = frame[frame[condition] == group]
            cells = []
            for metric in metrics:
                if pair_on:
                    paired = (chosen.groupby(pair_on)[metric].mean()
                              - base.groupby(pair_on)[metric].mean()).dropna()
                    cells.append((paired.mean(), _sem(paired), paired.count()))
                else:
                    delta = chosen[metric].mean() - base[metric].mean()
                    spread = float(np.hypot(_sem(chosen[metric]), _sem(base[metric])))
                    cells.append((delta, spread, min(chosen[metric].count(), base[metric].count())))
            rows.append([group] + cells)
        if not rows:
            raise ValueError(f"{what}: {condition!r} has no value besides the baseline {baseline!r}")

    figure = _new_figure(width=max(6.0, 1.1 * len(rows) + 3.0))
    axes = figure.add_subplot()
    positions = np.arange(len(rows))
    width = 0.38
    for offset, index, colour, name in ((-width / 2, 1, BLUE, "gets right"),
                                        (width / 2, 2, VERMILLION, "gets wrong")):
        means = [row[index][0] for row in rows]
        sems = [row[index][1] for row in rows]
        axes.bar(positions + offset, means, width, yerr=sems, capsize=3, color=colour,
                 label=f"on inputs the teacher {name}", edgecolor="white")
    labels = [f"{_label(row[0]).replace(', ', chr(10))}\n(n={min(row[1][2], row[2][2])})" for row in rows]
    axes.set_xticks(positions, labels, fontsize="small")
    axes.set_xlabel(condition)
    if baseline is None:
        axes.set_ylabel("test agreement with the teacher")
        title = f"Test agreement with the teacher where it is right / wrong, by {condition}"
    else:
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.set_ylabel(f"Δ test agreement vs {condition}={baseline}")
        title = f"Δ test agreement with the teacher relative to {condition}={baseline}"
    note = "mean ± 1 SEM over runs" + (f", paired by {pair_on}" if baseline is not None and pair_on else "")
    axes.set_title(f"{title}\n({note})", fontsize="medium")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    return _save(figure, out)


# --------------------------------------------------------------------------------------------
# figures from predictions.npz


PHI_COLORS = ("correct", "noise", "four_way")  # what colours a phi scatter's points
PHI_CLASSES = ("teacher_top", "true_label")  # whose class's probabilities it plots


def phi_scatter(predictions_npz: Path, out: Path, split: str = "train", color_by: str = "correct",
                on: str = "teacher_top") -> Path:
    """Per-sample X = φ(teacher's prob), Y = φ(student's prob) of one class, with the line X = Y.

    on: "teacher_top" — the teacher's top class; "true_label" — the clean label where the run
        stored it (`<split>_clean_label`, i.e. before label noise), else `<split>_label`.
    color_by: "correct" — whether the student's top class is the label it is scored against;
        "noise" — the label-noise mask (`<split>_noise_mask`); "four_way" — which of teacher and
        student are correct (both / only student / only teacher / neither)."""
    if color_by not in PHI_COLORS:
        raise ValueError(f"phi_scatter: color_by={color_by!r}; allowed: {', '.join(PHI_COLORS)}")
    if on not in PHI_CLASSES:
        raise ValueError(f"phi_scatter: on={on!r}; allowed: {', '.join(PHI_CLASSES)}")
    arrays = _load_predictions(predictions_npz, split, ("noise_mask",) if color_by == "noise" else ())
    teacher, student = arrays[f"{split}_teacher_logits"], arrays[f"{split}_student_logits"]
    labels = arrays[f"{split}_label"].astype(int)
    if on == "teacher_top":
        classes, class_text = teacher.argmax(axis=1), "the teacher's top class"
    elif f"{split}_clean_label" in arrays:
        classes, class_text = arrays[f"{split}_clean_label"].astype(int), "the true (clean) label"
    else:
        classes, class_text = labels, "the label"
    x, y = phi_of_class(teacher, classes), phi_of_class(student, classes)

    student_right = student.argmax(axis=1) == labels
    teacher_right = teacher.argmax(axis=1) == labels
    if color_by == "correct":
        groups = [("student correct", student_right, BLUE), ("student incorrect", ~student_right, VERMILLION)]
    elif color_by == "noise":
        noisy = arrays[f"{split}_noise_mask"].astype(bool)
        groups = [("clean label", ~noisy, BLUE), ("mislabeled", noisy, VERMILLION)]
    else:
        groups = [("both correct", teacher_right & student_right, BLUE),
                  ("only student correct", ~teacher_right & student_right, GREEN),
                  ("only teacher correct", teacher_right & ~student_right, ORANGE),
                  ("neither correct", ~teacher_right & ~student_right, VERMILLION)]

    figure = _new_figure(width=6.4, height=6.0)
    axes = figure.add_subplot()
    # Bigger groups first, so the few points of a small group are drawn on top and stay visible.
    size = 6 if len(x) > 5000 else 12
    for name, mask, colour in sorted(groups, key=lambda group: -group[1].sum()):
        if mask.any():
            axes.scatter(x[mask], y[mask], s=size, alpha=0.5, color=colour, linewidths=0,
                         label=f"{name} ({mask.sum():,})", rasterized=True)
    finite = np.isfinite(x) & np.isfinite(y)
    low = float(min(x[finite].min(), y[finite].min())) if finite.any() else -1.0
    high = float(max(x[finite].max(), y[finite].max())) if finite.any() else 1.0
    pad = 0.05 * max(high - low, 1.0)
    limits = (low - pad, high + pad)
    axes.plot(limits, limits, linestyle="--", color="black", linewidth=1, label="X = Y")
    axes.set_xlim(limits)
    axes.set_ylim(limits)
    axes.set_aspect("equal")
    axes.set_xlabel("X = φ(teacher probability)")
    axes.set_ylabel("Y = φ(student probability)")
    axes.set_title(f"{split} set: φ(p) on {class_text}\nφ(p) = log(p / (1 − p))", fontsize="medium")
    axes.grid(True, alpha=0.3)
    legend = axes.legend(loc="upper left", fontsize="small", markerscale=2)
    for handle in legend.legend_handles:
        # The points are translucent so that dense regions show; the legend keys need not be.
        handle.set_alpha(1.0)
    below = float(np.mean(y[finite] < x[finite])) if finite.any() else float("nan")
    axes.text(0.98, 0.02, f"n = {len(x):,}\nY < X: {below:.1%}", transform=axes.transAxes,
              ha="right", va="bottom", fontsize="small",
              bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": GREY, "alpha": 0.9})
    return _save(figure, out)


def reliability_diagram(predictions_npz: Path, out: Path, split: str = "test", bins: int = 15) -> Path:
    """Accuracy vs mean confidence per equal-width confidence bin for teacher and student, with
    the diagonal of perfect calibration, the ECE in the legend and the bin counts below."""
    if bins < 1:
        raise ValueError(f"reliability_diagram: bins={bins} must be at least 1")
    arrays = _load_predictions(predictions_npz, split)
    labels = arrays[f"{split}_label"].astype(int)
    figure = _new_figure(width=6.4, height=6.4)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfect calibration")
    width = 1.0 / bins
    for offset, role, colour, marker in ((-0.2, "teacher", BLUE, "o"), (0.2, "student", VERMILLION, "s")):
        frame = calibration_bins(arrays[f"{split}_{role}_logits"], labels, bins)
        filled = frame[frame["count"] > 0]
        top.plot(filled["confidence"], filled["accuracy"], marker=marker, color=colour, markersize=5,
                 linewidth=1.5, label=f"{role} (ECE {frame.attrs['ece']:.3f})")
        centres = (frame["low"] + frame["high"]) / 2
        bottom.bar(centres + offset * width, frame["count"], width * 0.4, color=colour, label=role)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy in bin")
    top.set_title(f"Reliability diagram, {split} set ({len(labels):,} samples, {bins} bins)",
                  fontsize="medium")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    bottom.set_yscale("log")
    bottom.set_ylabel("samples")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.grid(True, axis="y", alpha=0.3)
    return _save(figure, out)
