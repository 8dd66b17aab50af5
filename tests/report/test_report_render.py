"""kdrun-report figures and the HTML / Markdown report, on synthetic predictions and run tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from kdrun.report import plots
from kdrun.report.render import Section, format_value, markdown_table, write_report

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "scripts" / "check_report_in_browser.py"
CHROMIUM = Path("/usr/bin/chromium")
CLASSES = 10


def _split_arrays(rng: np.random.Generator, split: str, n: int) -> dict[str, np.ndarray]:
    """A teacher whose logit on the label gets a random margin, and a noisier, shrunk student."""
    labels = rng.integers(0, CLASSES, n)
    teacher = rng.normal(0.0, 1.0, (n, CLASSES))
    teacher[np.arange(n), labels] += rng.normal(4.0, 2.0, n)
    student = 0.7 * teacher + rng.normal(0.0, 1.0, (n, CLASSES))
    return {f"{split}_index": np.arange(n), f"{split}_label": labels,
            f"{split}_teacher_logits": teacher.astype(np.float32),
            f"{split}_student_logits": student.astype(np.float32)}


@pytest.fixture(scope="module")
def predictions(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    arrays = {**_split_arrays(rng, "train", 600), **_split_arrays(rng, "test", 400)}
    noisy = rng.random(600) < 0.1
    arrays["train_clean_label"] = arrays["train_label"].copy()
    arrays["train_label"] = np.where(noisy, (arrays["train_label"] + 1) % CLASSES, arrays["train_label"])
    arrays["train_noise_mask"] = noisy
    path = tmp_path_factory.mktemp("run") / "predictions.npz"
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    """One row per run: 3 losses × 4 κ × 3 switch points × 3 seeds."""
    rng = np.random.default_rng(1)
    rows = []
    for loss in ("ce", "kd", "rcd"):
        for kappa in (0.02, 0.1, 0.5, 1.0):
            for seed, at in enumerate((0.25, 0.5, 0.75)):
                bonus = 0.05 if loss == "kd" else 0.0
                rows.append({"loss.name": loss, "data.kappa": kappa, "schedule.at": at, "student.seed": seed,
                             "student/test/acc": 0.5 + 0.1 * np.log10(100 * kappa) + bonus + rng.normal(0, 0.02),
                             plots.AGREEMENT_CORRECT: 0.8 + bonus + rng.normal(0, 0.02),
                             plots.AGREEMENT_INCORRECT: 0.3 + 2 * bonus + rng.normal(0, 0.03)})
    return pd.DataFrame(rows)


def _assert_png(path: Path, min_side: int = 400) -> None:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    height, width = image.shape[:2]
    assert min(height, width) >= min_side and max(height, width) <= 3000
    assert image[..., :3].std() > 0.05, "the figure is blank"


# --------------------------------------------------------------------------------------------
# numbers behind the figures


def test_phi_is_stable_where_the_probability_rounds_to_one():
    logits = np.array([[40.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    phi = plots.phi_of_class(logits, np.array([0, 2]))
    # φ(p) = f_j − logsumexp_{i≠j} f_i: 40 − log 2 for the first row; p = e²/(1+e) for the second.
    assert phi[0] == pytest.approx(40.0 - np.log(2.0))
    p = np.exp(2.0) / (1.0 + np.e + np.exp(2.0))
    assert phi[1] == pytest.approx(np.log(p / (1.0 - p)))
    assert np.isfinite(phi).all()


def test_calibration_bins_count_every_sample_and_give_the_ece():
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(500, 5)) * 3, rng.integers(0, 5, 500)
    frame = plots.calibration_bins(logits, labels, bins=10)
    assert frame["count"].sum() == 500
    filled = frame[frame["count"] > 0]
    expected = float((np.abs(filled["accuracy"] - filled["confidence"]) * filled["count"]).sum() / 500)
    assert frame.attrs["ece"] == pytest.approx(expected)
    assert 0.0 <= frame.attrs["ece"] <= 1.0


# --------------------------------------------------------------------------------------------
# figures


@pytest.mark.parametrize("split,color_by,on", [("train", "correct", "teacher_top"), ("train", "noise", "teacher_top"),
                                               ("test", "four_way", "true_label"), ("train", "correct", "true_label")])
def test_phi_scatter_writes_a_png(predictions, tmp_path, split, color_by, on):
    out = plots.phi_scatter(predictions, tmp_path / "phi.png", split=split, color_by=color_by, on=on)
    _assert_png(out)


def test_phi_scatter_refuses_missing_inputs(predictions, tmp_path):
    with pytest.raises(ValueError, match="test_noise_mask"):
        plots.phi_scatter(predictions, tmp_path / "phi.png", split="test", color_by="noise")
    with pytest.raises(ValueError, match="validation_label"):
        plots.phi_scatter(predictions, tmp_path / "phi.png", split="validation")
    with pytest.raises(ValueError, match="color_by"):
        plots.phi_scatter(predictions, tmp_path / "phi.png", color_by="rainbow")
    with pytest.raises(ValueError, match="no such predictions file"):
        plots.phi_scatter(tmp_path / "absent.npz", tmp_path / "phi.png")


def test_reliability_diagram_writes_a_png(predictions, tmp_path):
    _assert_png(plots.reliability_diagram(predictions, tmp_path / "reliability.png", bins=10))
    with pytest.raises(ValueError, match="missing"):
        plots.reliability_diagram(predictions, tmp_path / "r.png", split="valid")


def test_metric_vs_kappa_and_switch_point_write_pngs(runs, tmp_path):
    _assert_png(plots.metric_vs_kappa(runs, "student/test/acc", "loss.name", tmp_path / "kappa.png"))
    _assert_png(plots.metric_vs_switch_point(runs, "student/test/acc", tmp_path / "at.png"))
    _assert_png(plots.metric_vs_switch_point(runs, "student/test/acc", tmp_path / "at_by.png",
                                             condition="loss.name"))


def test_run_table_figures_name_the_missing_column(runs, tmp_path):
    with pytest.raises(ValueError, match="student/test/nll"):
        plots.metric_vs_kappa(runs, "student/test/nll", "loss.name", tmp_path / "x.png")
    with pytest.raises(ValueError, match="data.kappa"):
        plots.metric_vs_kappa(runs.drop(columns="data.kappa"), "student/test/acc", "loss.name", tmp_path / "x.png")
    with pytest.raises(ValueError, match="schedule.at"):
        plots.metric_vs_switch_point(runs.drop(columns="schedule.at"), "student/test/acc", tmp_path / "x.png")
    with pytest.raises(ValueError, match="agreement_teacher_incorrect"):
        plots.agreement_split_bars(runs.drop(columns=plots.AGREEMENT_INCORRECT), "loss.name", tmp_path / "x.png")


def test_agreement_split_bars_plain_and_relative_to_a_baseline(runs, tmp_path):
    _assert_png(plots.agreement_split_bars(runs, "loss.name", tmp_path / "bars.png"))
    _assert_png(plots.agreement_split_bars(runs, "loss.name", tmp_path / "delta.png", baseline="ce"))
    _assert_png(plots.agreement_split_bars(runs, "loss.name", tmp_path / "paired.png", baseline="ce",
                                           pair_on="student.seed"))
    # A numeric condition given its baseline as text, as it comes from the command line.
    _assert_png(plots.agreement_split_bars(runs, "data.kappa", tmp_path / "kappa.png", baseline="1"))
    with pytest.raises(ValueError, match="baseline 'mse' is not a value"):
        plots.agreement_split_bars(runs, "loss.name", tmp_path / "x.png", baseline="mse")


# --------------------------------------------------------------------------------------------
# report


def test_numbers_are_formatted_for_reading():
    assert format_value(0.123456789) == "0.1235"
    assert format_value(123.456789) == "123.5"
    assert format_value(15625.0) == "15625"
    assert format_value(7) == "7"
    assert format_value(float("nan")) == "–"
    assert format_value(3.2e-7, p_value=True) == "3.20e-07"
    assert format_value(0.043, p_value=True) == "0.043"
    assert format_value(True) == "yes"


def test_markdown_table_escapes_pipes_and_marks_p_values():
    frame = pd.DataFrame({"comparison": ["a|b", "c"], "p_value": [1e-8, 0.5], "n": [10, 10]})
    lines = markdown_table(frame).splitlines()
    assert lines[0].split() == ["|", "comparison", "|", "p_value", "|", "n", "|"]
    assert "a\\|b" in lines[2] and "1.00e-08" in lines[2]
    assert len({line.count("|") - line.count("\\|") for line in lines}) == 1


@pytest.fixture(scope="module")
def report(predictions, runs, tmp_path_factory) -> tuple[Path, Path, dict]:
    figures = tmp_path_factory.mktemp("figures")
    kappa = plots.metric_vs_kappa(runs, "student/test/acc", "loss.name", figures / "acc_vs_kappa.png")
    phi = plots.phi_scatter(predictions, figures / "phi_train.png", color_by="noise")
    # A second figure with the same file name from elsewhere must not overwrite the first.
    other = tmp_path_factory.mktemp("elsewhere")
    reliability = plots.reliability_diagram(predictions, other / "phi_train.png")
    summary = (runs.groupby(["loss.name", "data.kappa"])["student/test/acc"]
               .agg(["mean", "sem", "count"]).reset_index())
    comparisons = pd.DataFrame({"comparison": ["kd vs ce", "rcd vs ce <b>bold?</b>"],
                                "PI": [0.0512345, -0.00123], "wilcoxon_p": [3.2e-7, 0.43], "n": [12, 12]})
    sections = [
        Section("Summary", "36 runs: 3 losses × 4 κ × 3 seeds.\n\nText with <script>alert(1)</script> & more.",
                tables=[("Test accuracy by loss and κ", summary), ("Paired comparisons", comparisons)]),
        Section("Figures", figures=[("Accuracy vs κ", kappa), ("φ scatter, train, by noise", phi),
                                    ("Reliability, test", reliability)]),
    ]
    out = tmp_path_factory.mktemp("report")
    html_path, markdown_path = write_report(out, "kdrun report <sweep>", sections)
    return html_path, markdown_path, {"summary": summary}


def test_html_is_self_contained_and_escaped(report):
    html_path, _, _ = report
    page = html_path.read_text(encoding="utf-8")
    assert html_path.name == "report.html"
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)
    assert len(sources) == 3 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r"<(script|link|iframe)\b", page, re.IGNORECASE)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;bold?&lt;/b&gt;" in page
    assert "kdrun report &lt;sweep&gt;" in page
    for anchor in ("section-1", "section-2"):
        assert f'href="#{anchor}"' in page and f'id="{anchor}"' in page
    assert "3.20e-07" in page and "0.05123" in page


def test_markdown_has_tables_and_figure_links(report):
    _, markdown_path, frames = report
    text = markdown_path.read_text(encoding="utf-8")
    assert re.search(r"^\| loss\.name +\| data\.kappa +\| +mean \|", text, re.MULTILINE)
    assert re.search(r"^\| comparison +\| +PI \| wilcoxon_p \|", text, re.MULTILINE)
    first_mean = format_value(frames["summary"]["mean"].iloc[0])
    assert first_mean in text and "3.20e-07" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["figures/acc_vs_kappa.png", "figures/phi_train.png", "figures/phi_train_2.png"]
    for link in links:
        _assert_png(markdown_path.parent / link)
    assert "<script>" not in text and "<b>" not in text


def test_report_renders_in_headless_chromium(report, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed; the browser check needs Chromium (apt-get install chromium)")
    html_path, _, frames = report
    screenshot = tmp_path / "screenshot.png"
    first_mean = format_value(frames["summary"]["mean"].iloc[0])
    result = subprocess.run([sys.executable, str(CHECKER), str(html_path), "--screenshot", str(screenshot),
                             "--expect", "Paired comparisons", "--expect", first_mean, "--expect", "3.20e-07"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    image = imread(screenshot)[..., :3]
    assert image.shape[:2] == (2000, 1280)
    assert image.std() > 0.02, "the screenshot is blank"
    assert '"decoded": 3' in result.stdout
