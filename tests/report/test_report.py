"""kdrun-report: tables, aggregation and paired statistics on hand-made runs with known values,
then the installed command on a real small sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as scipy_stats

from kdrun.report import stats
from kdrun.report.aggregate import summarize
from kdrun.report.cli import main
from kdrun.report.collect import collect_runs

SEEDS = range(6)
# Per-seed deviations with mean 0 and distinct magnitudes once shifted: the Wilcoxon test is exact.
NOISE = [-0.003, -0.001, 0.0, 0.002, 0.004, -0.002]
KD_ACC_GAIN = {0.25: 0.1, 1.0: -0.05}  # KD ahead at small kappa, behind at kappa=1: kappa* = 0.75
KD_NLL_CHANGE = -0.2  # lower is better: KD improves nll


def write_run(run_dir: Path, overrides: list[str], metrics: dict | None) -> Path:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def ce_acc(seed: int, kappa: float) -> float:
    return 0.5 + 0.01 * seed + 0.1 * kappa


def ce_nll(seed: int) -> float:
    return 1.0 + 0.02 * seed


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """loss ∈ {ce, kd} × kappa ∈ {0.25, 1} × 6 seeds, with known metrics, plus one failed job."""
    root = tmp_path / "sweep"
    job = 0
    for loss in ("ce", "kd"):
        for kappa in KD_ACC_GAIN:
            for seed in SEEDS:
                acc, nll = ce_acc(seed, kappa), ce_nll(seed)
                if loss == "kd":
                    acc += KD_ACC_GAIN[kappa] + NOISE[seed]
                    nll += KD_NLL_CHANGE + NOISE[seed]
                write_run(root / str(job), [f"loss={loss}", f"seed={seed}", f"data.kappa={kappa}",
                                            f"paths.output_root={tmp_path}"],
                          {"student/test/acc": acc, "student/test/nll": nll, "teacher/test/acc": 0.9,
                           "teacher/source": "trained", "wall_time_s": 1.0})
                job += 1
    failed = write_run(root / str(job), ["loss=kd", "seed=9", "data.kappa=1.0"], None)
    (failed / "kdrun.log").write_text("[2026-01-01][kdrun][INFO] start\nValueError: data.kappa too large\n")
    return root


def test_collect_builds_one_row_per_run_with_varying_overrides(sweep: Path):
    table = collect_runs([sweep])
    assert len(table) == 25
    assert table.attrs["conditions"] == ["data.kappa", "loss", "seed"]  # paths.* is never a condition
    assert table["seed"].dtype.kind == "i" and table["data.kappa"].dtype.kind == "f"
    assert set(table["loss"]) == {"ce", "kd"}
    assert (table.loc[table["status"] == "ok", "teacher/source"] == "trained").all()
    failed = table[table["status"] == "failed"]
    assert len(failed) == 1 and "ValueError: data.kappa too large" in failed["error"].iloc[0]
    one = table[(table["loss"] == "kd") & (table["seed"] == 2) & (table["data.kappa"] == 0.25)]
    assert one["student/test/acc"].iloc[0] == pytest.approx(ce_acc(2, 0.25) + 0.1)
    # A run directory given directly is a run too.
    assert len(collect_runs([sweep / "0"])) == 1


def test_aggregate_mean_std_sem_n_over_seeds(sweep: Path):
    summary = summarize(collect_runs([sweep]))
    row = summary[(summary["loss"] == "ce") & (summary["data.kappa"] == 1.0)
                  & (summary["metric"] == "student/test/acc")].iloc[0]
    values = np.array([ce_acc(seed, 1.0) for seed in SEEDS])
    assert row["n"] == 6
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    assert row["sem"] == pytest.approx(values.std(ddof=1) / np.sqrt(6))
    assert "seed" not in summary.columns


def test_paired_comparison_pi_pg_wilcoxon_ttest_and_bh(sweep: Path):
    table = collect_runs([sweep])
    comparisons, pairs = stats.compare_conditions(table, {"loss": "kd"}, {"loss": "ce"}, ["seed"],
                                                  ["student/test/acc", "student/test/nll"])
    assert len(comparisons) == 4  # one group per kappa, two metrics each
    assert len(pairs) == 2 * 6 * 2
    for kappa, gain in KD_ACC_GAIN.items():
        acc = comparisons[(comparisons["data.kappa"] == kappa) & (comparisons["metric"] == "student/test/acc")].iloc[0]
        kd = np.array([ce_acc(s, kappa) + gain + NOISE[s] for s in SEEDS])
        ce = np.array([ce_acc(s, kappa) for s in SEEDS])
        assert acc["n"] == 6 and acc["pi"] == pytest.approx(gain)
        assert acc["pg"] == pytest.approx(kd.mean() / ce.mean())
        assert acc["wilcoxon_method"] == "exact"
        assert acc["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(kd, ce, alternative="greater").pvalue)
        assert acc["ttest_p"] == pytest.approx(scipy_stats.ttest_rel(kd, ce, alternative="greater").pvalue)
    # All six differences positive: the exact one-sided p is 1/2^6.
    assert comparisons.loc[(comparisons["data.kappa"] == 0.25) & (comparisons["metric"] == "student/test/acc"),
                           "wilcoxon_p"].iloc[0] == pytest.approx(1 / 64)
    # nll reads lower-is-better: "greater" (improvement) becomes compare − against < 0.
    nll = comparisons[comparisons["metric"] == "student/test/nll"].iloc[0]
    kd = np.array([ce_nll(s) + KD_NLL_CHANGE + NOISE[s] for s in SEEDS])
    ce = np.array([ce_nll(s) for s in SEEDS])
    assert not nll["higher_is_better"] and nll["tested_alternative"] == "less"
    assert nll["pi"] == pytest.approx(-0.2) and nll["improvement"] == pytest.approx(0.2)
    assert nll["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon(kd, ce, alternative="less").pvalue)
    # BH over the family of metrics within each kappa.
    for _, family in comparisons.groupby("data.kappa"):
        expected = scipy_stats.false_discovery_control(family["wilcoxon_p"].to_numpy())
        np.testing.assert_allclose(family["wilcoxon_q"].to_numpy(), expected)


def test_benjamini_hochberg_known_example():
    # Sorted p 0.005, 0.01, 0.03, 0.04 (m=4): p*m/rank = 0.02, 0.02, 0.04, 0.04, already monotone.
    p = [0.01, 0.04, 0.03, 0.005]
    expected = [0.02, 0.04, 0.04, 0.02]
    np.testing.assert_allclose(stats._benjamini_hochberg_by_hand(np.array(p)), expected)
    np.testing.assert_allclose(stats.benjamini_hochberg(p), expected)
    # The step-up minimum: 0.04*2/1 = 0.08 > 0.05*2/2 = 0.05, so the smallest p takes 0.05.
    np.testing.assert_allclose(stats._benjamini_hochberg_by_hand(np.array([0.04, 0.05])), [0.05, 0.05])
    assert np.isnan(stats.benjamini_hochberg([np.nan, 0.01])[0])


def test_kappa_star_by_linear_interpolation(sweep: Path):
    assert stats.kappa_star([0.25, 1.0], [0.7, 0.55], [0.6, 0.6]) == pytest.approx(0.75)
    assert stats.kappa_star([1.0, 0.5, 0.25], [1, 2, 3], [0, 1, 2]) is None  # never cross
    assert stats.kappa_star([0.25, 0.5], [0.6, 0.7], [0.5, 0.7]) == pytest.approx(0.5)  # equal at a point
    comparisons, _ = stats.compare_conditions(collect_runs([sweep]), {"loss": "kd"}, {"loss": "ce"}, ["seed"],
                                              ["student/test/acc", "student/test/nll"])
    stars = stats.kappa_stars(comparisons).set_index("metric")["kappa_star"]
    assert stars["student/test/acc"] == pytest.approx(0.75)
    assert stars["student/test/nll"] is None or pd.isna(stars["student/test/nll"])


def test_cli_writes_tables_and_reports_bad_input(sweep: Path, tmp_path: Path, capsys):
    assert main([str(sweep), "--compare", "loss=kd", "--against", "loss=ce", "--metrics", "student/test/*",
                 "--no-figures"]) == 0
    out = sweep / "report"
    for name in ("runs.csv", "summary.csv", "comparisons.csv", "pairs.csv", "kappa_star.csv", "report.html",
                 "report.md"):
        assert (out / name).is_file(), name
    assert set(pd.read_csv(out / "comparisons.csv")["metric"]) == {"student/test/acc", "student/test/nll"}

    def error_of(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        return capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert "no runs found" in error_of([str(tmp_path / "empty")])
    message = error_of([str(sweep), "--compare", "optimizer=sgd", "--against", "loss=ce", "--no-figures"])
    assert "'optimizer'" in message and "allowed: data.kappa, loss, seed" in message
    message = error_of([str(sweep), "--compare", "loss=dkd", "--against", "loss=ce", "--no-figures"])
    assert "loss=dkd matches no run" in message and "ce, kd" in message
    unpaired = tmp_path / "unpaired"
    for job, (loss, seed) in enumerate([("kd", 0), ("kd", 1), ("ce", 2), ("ce", 3)]):
        write_run(unpaired / str(job), [f"loss={loss}", f"seed={seed}"], {"student/test/acc": 0.5})
    message = error_of([str(unpaired), "--compare", "loss=kd", "--against", "loss=ce", "--no-figures"])
    assert "no pairs" in message and "seed=0" in message and "seed=2" in message


def test_cli_module_does_not_import_torch():
    code = "import sys, kdrun.report.cli; assert 'torch' not in sys.modules and 'lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_report_on_a_real_sweep(tmp_path: Path, quick_sweep):
    sweep, root = quick_sweep  # kdrun -m loss=ce,kd seed=0,1,2 (conftest)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    script = Path(sys.executable).parent / "kdrun-report"
    result = subprocess.run([str(script), str(root / "sweeps"), "--compare", "loss=kd", "--against", "loss=ce",
                             "--out", str(tmp_path / "report"), "--title", "ce against kd"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "report"
    assert str(out) in result.stdout
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and set(runs["loss"]) == {"ce", "kd"} and set(runs["seed"]) == {0, 1, 2}
    comparisons = pd.read_csv(out / "comparisons.csv")
    acc = comparisons[comparisons["metric"] == "student/test/acc"].iloc[0]
    assert acc["n"] == 3 and 0 <= acc["wilcoxon_p"] <= 1
    assert len(pd.read_csv(out / "pairs.csv").query("metric == 'student/test/acc'")) == 3
    assert (out / "report.html").stat().st_size > 0 and "ce against kd" in (out / "report.md").read_text()
    assert list((out / "figures").glob("*.png"))


def test_select_on_validation_and_report_on_test(tmp_path):
    """Paper 004's protocol: per loss, the gamma with the best mean validation accuracy, and its test accuracy."""
    val = {("focal_kd", 1): 0.70, ("focal_kd", 2): 0.80, ("focal_kd", 5): 0.75, ("kd", 1): 0.60, ("kd", 2): 0.65,
           ("kd", 5): 0.62}
    job = 0
    for (loss, gamma), accuracy in val.items():
        for seed in (0, 1):
            write_run(tmp_path / "sweep" / str(job), [f"loss={loss}", f"loss.gamma={gamma}", f"seed={seed}"],
                      {"student/val/acc": accuracy + 0.01 * seed, "student/test/acc": accuracy - 0.1 + 0.01 * seed})
            job += 1
    from kdrun.report.cli import main

    assert main([str(tmp_path / "sweep"), "--select-by", "student/val/acc", "--select-over", "loss.gamma",
                 "--no-figures"]) == 0
    selection = pd.read_csv(tmp_path / "sweep" / "report" / "selection.csv")
    chosen = dict(zip(selection["loss"], selection["loss.gamma"]))
    assert chosen == {"focal_kd": 2, "kd": 2}
    test = dict(zip(selection["loss"], selection["student/test/acc"]))
    assert test["focal_kd"] == pytest.approx(0.705) and test["kd"] == pytest.approx(0.555)
    assert set(selection["candidates"]) == {3}
    assert main([str(tmp_path / "sweep"), "--select-by", "student/val/nope", "--no-figures"]) == 2


def test_a_setting_only_one_side_has_does_not_split_the_pairs(tmp_path):
    """KD at one alpha against cross-entropy, which has no alpha: paired by seed alone."""
    for job, (loss, alpha, seed) in enumerate([("kd", 0.5, 0), ("kd", 0.5, 1), ("kd", 0.9, 0), ("kd", 0.9, 1),
                                               ("ce", None, 0), ("ce", None, 1)]):
        overrides = [f"loss={loss}", f"seed={seed}"] + ([f"loss.alpha={alpha}"] if alpha else [])
        write_run(tmp_path / "runs" / str(job), overrides, {"student/test/acc": 0.8 + (alpha or 0) / 10 + seed / 100})
    from kdrun.report.cli import main

    assert main([str(tmp_path / "runs"), "--compare", "loss=kd", "loss.alpha=0.9", "--against", "loss=ce",
                 "--metrics", "student/test/acc", "--no-figures"]) == 0
    (row,) = pd.read_csv(tmp_path / "runs" / "report" / "comparisons.csv").to_dict("records")
    assert row["n"] == 2 and row["pi"] == pytest.approx(0.09)


def test_phi_scatters_can_be_coloured_by_the_saved_label_noise_mask(tmp_path, quick_sweep, capsys):
    from PIL import Image

    _, root = quick_sweep  # real runs: their predictions.npz hold train_noise_mask (all clean here)
    out = tmp_path / "report"
    assert main([str(root / "sweeps"), "--phi-color", "noise", "--phi-on", "true_label", "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "phi scatter (train, coloured by noise)" in markdown
    figure = Image.open(out / "figures" / "phi_0.png").convert("RGB")
    default = tmp_path / "default"
    assert main([str(root / "sweeps"), "--out", str(default)]) == 0
    assert "coloured by correct" in (default / "report.md").read_text()
    assert list(figure.getdata()) != list(Image.open(default / "figures" / "phi_0.png").convert("RGB").getdata())
    with pytest.raises(SystemExit):
        main([str(root / "sweeps"), "--phi-color", "rainbow"])
    assert "invalid choice: 'rainbow'" in capsys.readouterr().err


def test_correlate_reports_spearman_and_pearson_over_runs_and_over_condition_means(tmp_path):
    for num, (bias, seed) in enumerate((b, s) for b in (0.0, 0.2, 0.4) for s in range(3)):
        run = tmp_path / str(num)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(f"- teacher.oracle_options.bias={bias}\n- seed={seed}\n")
        mse = bias ** 2 + 0.01 * seed
        (run / "metrics.json").write_text(json.dumps({"teacher/train/mse_to_bayes": mse,
                                                      "student/test/auroc": 0.99 - mse + 0.001 * (seed % 2)}))
    out = tmp_path / "report"
    assert main([str(tmp_path), "--correlate", "teacher/train/mse_to_bayes:student/test/auroc", "--out", str(out)]) == 0
    table = pd.read_csv(out / "correlations.csv").set_index("over")
    assert table.loc["runs", "n"] == 9 and table.loc["condition means", "n"] == 3
    assert table.loc["runs", "spearman_rho"] < -0.9 and table.loc["condition means", "spearman_rho"] == -1.0
    assert "Correlations" in (out / "report.md").read_text() and (out / "figures" / "correlation_0.png").is_file()
    assert main([str(tmp_path), "--correlate", "teacher/train/mse_to_bayes", "--no-figures"]) == 2
    assert main([str(tmp_path), "--correlate", "student/test/nope:student/test/auroc", "--no-figures"]) == 2


def test_condition_labels_leave_out_missing_settings_and_columns_the_others_determine():
    from kdrun.report.cli import _condition_labels

    table = pd.DataFrame({
        "experiment": ["p/moderator"] * 4 + ["p/siddo"],
        "loss": ["kd", "kd", "rcd", "rcd", "ce"],
        "loss.alpha": [0.1, 0.9, 0.1, 0.9, np.nan],
        "loss.temperature": [1.0, 1.0, 1.0, 1.0, np.nan],
    })
    labels = _condition_labels(table, list(table.columns))
    assert labels.tolist() == ["loss=kd, loss.alpha=0.1", "loss=kd, loss.alpha=0.9", "loss=rcd, loss.alpha=0.1",
                               "loss=rcd, loss.alpha=0.9", "loss=ce"]
    # a column that alone separates two conditions stays, even when one side lacks it
    only = pd.DataFrame({"loss.temperature": [1.0, np.nan], "seed": [0, 0]})
    assert _condition_labels(only, ["loss.temperature"]).tolist() == ["loss.temperature=1.0", "all runs"]
    assert _condition_labels(table, []).unique().tolist() == ["all runs"]


def test_condition_order_compares_the_numbers_inside_labels_as_numbers():
    from kdrun.report.plots import _sort_key

    labels = ["teacher.epochs=10", "teacher.epochs=2", "loss=kd", "teacher.epochs=1.5", 0.5, "teacher.epochs=50"]
    assert sorted(labels, key=_sort_key) == [0.5, "loss=kd", "teacher.epochs=1.5", "teacher.epochs=2",
                                             "teacher.epochs=10", "teacher.epochs=50"]


def test_metrics_against_alpha_draw_the_runs_without_alpha_as_reference_levels(tmp_path):
    """Paper 003's adversarial transfer: KD's probe rate grows with alpha, RCD's and SIDDO's do not."""
    job = 0
    for loss in ("kd", "rcd"):
        for alpha in (0.1, 0.5, 0.9):
            for seed in range(4):
                rate = (0.1 + 0.8 * alpha if loss == "kd" else 0.1) + 0.01 * seed
                write_run(tmp_path / "kd_rcd" / str(job), [f"loss={loss}", f"loss.alpha={alpha}", f"seed={seed}"],
                          {"student/test/probe_adversarial_rate": rate, "student/test/acc": 0.5,
                           "teacher/source": "trained", "wall_time_s": 1.0})
                job += 1
    for seed in range(4):
        write_run(tmp_path / "siddo" / str(seed), ["loss=ce", f"seed={seed}"],
                  {"student/test/probe_adversarial_rate": 0.1 + 0.01 * seed, "student/test/acc": 0.5,
                   "teacher/source": "trained", "wall_time_s": 1.0})
    out = tmp_path / "report"
    assert main([str(tmp_path / "kd_rcd"), str(tmp_path / "siddo"), "--out", str(out), "--compare", "loss=kd",
                 "--against", "loss=rcd", "--pair-by", "seed", "--metrics", "student/test/acc"]) == 0
    figure = out / "figures" / "student_test_probe_adversarial_rate_vs_alpha.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    assert "probe_adversarial_rate against loss.alpha" in (out / "report.md").read_text()
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert sorted(comparisons["loss.alpha"].unique()) == [0.1, 0.5, 0.9]  # one comparison per alpha


def test_metric_vs_alpha_needs_an_alpha_column(tmp_path):
    from kdrun.report import plots

    table = pd.DataFrame({"student/test/acc": [0.5, 0.6], "condition": ["a", "b"]})
    with pytest.raises(ValueError, match="loss.alpha"):
        plots.metric_vs_alpha(table, "student/test/acc", "condition", tmp_path / "x.png")
