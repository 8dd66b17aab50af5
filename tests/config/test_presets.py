"""Every experiment preset composes, and every job of its sweep passes validation (before any training)."""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from support import compose_config
from kdrun.config.tree import config_dir
from kdrun.config.validate import validate_config

PRESETS = sorted(str(p.relative_to(config_dir() / "experiment").with_suffix(""))
                 for p in (config_dir() / "experiment").rglob("*.yaml"))


def top_level_items(text: str) -> list[str]:
    """A sweep's values split at the commas outside brackets: '[1,2],[3,4]' -> ['[1,2]', '[3,4]']."""
    items, depth, current = [], 0, ""
    for character in text:
        depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(character, 0)
        if character == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += character
    return [*items, current]


def sweep_choices(params: dict, keep: int = 2) -> list[list[str]]:
    """Each swept key's overrides, its value list cut to its first `keep` entries and the seeds to one (they
    cannot make a job invalid)."""
    choices = []
    for key, values in params.items():
        keep_here = 1 if key == "seed" or key.startswith("seeds.") else keep
        text = str(values)
        if text.startswith("range("):
            start, stop = (int(v) for v in text[6:-1].split(",")[:2])
            options = [str(v) for v in range(start, stop)]
        elif text.startswith(("tag(", "interval(", "choice(")):
            continue  # Optuna search spaces: not a grid
        else:
            options = top_level_items(text)
        choices.append([f"{key}={value}" for value in options[:keep_here]])
    return choices


def sweep_jobs(params: dict, keep: int = 2) -> list[list[str]]:
    """Every combination of the swept keys' first `keep` values (the slow job validates them all)."""
    return [list(combo) for combo in itertools.product(*sweep_choices(params, keep))]


def covering_jobs(params: dict, keep: int = 2) -> list[list[str]]:
    """Jobs in which each of the first `keep` values of every swept key appears at least once: job i takes each
    key's value i (its last when it has fewer)."""
    choices = sweep_choices(params, keep)
    count = max((len(options) for options in choices), default=0)
    return [[options[min(i, len(options) - 1)] for options in choices] for i in range(count)]


def _validate_jobs(tmp_path, preset: str, jobs) -> None:
    """The preset alone when it sweeps nothing, else each of `jobs`: composed and validated."""
    for job in jobs or [[]]:
        cfg = compose_config(tmp_path, [f"experiment={preset}", *job], quick=False)
        validate_config(cfg)
        assert cfg.teacher.model.num_classes == cfg.student.model.num_classes


def _params(preset: str) -> dict:
    preset_file = OmegaConf.load(config_dir() / "experiment" / f"{preset}.yaml")
    return OmegaConf.to_container(OmegaConf.select(preset_file, "hydra.sweeper.params") or OmegaConf.create({}))


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_each_swept_value_validates(tmp_path, preset):
    _validate_jobs(tmp_path, preset, covering_jobs(_params(preset)))


@pytest.mark.slow  # every combination: about a minute of composing
@pytest.mark.parametrize("preset", PRESETS)
def test_every_sweep_job_of_a_preset_validates(tmp_path, preset):
    _validate_jobs(tmp_path, preset, sweep_jobs(_params(preset)))


def test_covering_jobs_hold_each_value_and_the_grid_every_combination():
    params = {"loss": "kd,ce,kl", "loss.temperature": "1,4", "seed": "0,1,2"}
    assert covering_jobs(params) == [["loss=kd", "loss.temperature=1", "seed=0"],
                                     ["loss=ce", "loss.temperature=4", "seed=0"]]
    assert len(sweep_jobs(params)) == 4 and ["loss=ce", "loss.temperature=1", "seed=0"] in sweep_jobs(params)


def test_full_and_small_variants_come_in_pairs():
    papers = {p.split("/")[0] for p in PRESETS if p.startswith("paper")}
    assert papers == {"paper000", "paper001", "paper002", "paper003", "paper004"}
    for preset in PRESETS:
        if preset.startswith("paper") and preset.endswith("_small"):
            assert preset[: -len("_small")] in PRESETS, preset


def test_the_reproduction_script_runs_every_small_preset_and_only_existing_ones():
    import re
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / "scripts" / "reproduce.sh").read_text()
    named = set(re.findall(r"experiment=(paper\d{3}/[\w]+)", script))
    assert named <= set(PRESETS), sorted(named - set(PRESETS))
    small = {p for p in PRESETS if p.startswith("paper") and p.endswith("_small")}
    assert small <= named, f"scripts/reproduce.sh never runs {sorted(small - named)}"


@pytest.mark.slow  # a whole small preset: 40 runs, about a minute
def test_a_small_preset_runs_end_to_end_and_its_report_holds_the_claims_table(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from support import kdrun_command

    sweep = tmp_path / "sweep"
    result = kdrun_command(["experiment=paper001/distorted_teachers_small", f"hydra.sweep.dir={sweep}",
                            "trainer.enable_progress_bar=false"], tmp_path, {"KDRUN_OUTPUT_ROOT": str(tmp_path)},
                           timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = subprocess.run([str(Path(sys.executable).parent / "kdrun-report"), str(sweep), "--out", str(tmp_path / "r"),
                             "--compare", "teacher.oracle_options.distortion=8", "--against",
                             "teacher.oracle_options.distortion=1", "--alternative", "less", "--no-figures",
                             "--metrics", "student/test/auroc,student/test/acc,student/test/nll"],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    comparisons = pd.read_csv(tmp_path / "r" / "comparisons.csv").set_index("metric")
    assert comparisons.loc["student/test/auroc", "n"] == 10  # ten paired trials: an exact p down to 1/1024
    assert comparisons.loc["student/test/auroc", "pi"] < 0  # the miscalibrated teacher's students rank worse
    assert "| student/test/auroc |" in (tmp_path / "r" / "report.md").read_text()
