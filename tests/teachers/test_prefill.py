"""kdrun-prefill: the view cache filled ahead of the students, who then run no teacher pass; only the drawn views
with prefill.views=drawn; an interrupted prefill continues; bad settings are refused before anything is trained."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from support import AUGMENTED_CIFAR, QUICK, run_in_process
from kdrun.config.seeds import resolve_seeds
from kdrun.config.tree import config_dir
from kdrun.data.datamodule import DataSplits
from kdrun.errors import ConfigError
from kdrun.teachers.obtain import obtain_teacher
from kdrun.teachers.prefill import prefill
from kdrun.teachers.view_cache import open_view_cache

RUN = AUGMENTED_CIFAR


def _prefill_config(tmp_path, overrides):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="prefill", overrides=[f"paths.output_root={tmp_path}", *QUICK, *overrides])
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


def _student(tmp_path, cifar_root, overrides=(), name="student"):
    metrics, _ = run_in_process(tmp_path, [*RUN, f"data.root={cifar_root}", *overrides], name=name, quick=False)
    return metrics


def test_after_a_prefill_of_every_view_students_run_no_teacher_pass(tmp_path, cifar_root):
    cfg = _prefill_config(tmp_path, [*RUN, f"data.root={cifar_root}"])
    record = prefill(cfg, tmp_path / "prefill")
    train_size = int(record["rows_wanted"] / 162)
    assert record["rows_computed"] == record["rows_wanted"] == train_size * 162 and record["rows_found"] == 0
    assert record["fill_after"] == 1.0 and record["disk_mb"] > 0
    again = prefill(cfg, tmp_path / "prefill_again")  # nothing left to do: an interrupted prefill continues
    assert again["rows_computed"] == 0 and again["rows_found"] == record["rows_wanted"]
    # a row holds the teacher's logits on that view of that sample
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    teacher = obtain_teacher(cfg, splits, tmp_path / "check")
    cache = open_view_cache(cfg, splits, teacher)
    values, found = cache.lookup(torch.tensor([5, 0]), torch.tensor([161, 80]))
    assert found.all()
    for row, (sample, view) in enumerate(((5, 161), (0, 80))):
        image = splits.eval_transform(splits.views.apply(splits.source.train.dataset[sample][0], view))
        with torch.inference_mode():
            torch.testing.assert_close(values[row], teacher.model.eval()(image[None])[0], rtol=1e-5, atol=1e-5)
    cache.close()
    for seed in (0, 1):
        student = _student(tmp_path, cifar_root, [f"seed={seed}"], name=f"seed{seed}")
        assert student["teacher/view_cache_computed"] == 0
        assert student["teacher/view_cache_hits"] == 2 * student["student/train_size"]


def test_a_prefill_of_the_drawn_views_fills_exactly_what_those_students_read(tmp_path, cifar_root):
    cfg = _prefill_config(tmp_path, [*RUN, f"data.root={cifar_root}", "prefill.views=drawn", "prefill.seeds=[0]",
                                     "prefill.batch_size=7"])  # batches that cut across views and blocks
    record = prefill(cfg, tmp_path / "prefill")
    assert 0 < record["rows_computed"] == record["rows_wanted"] <= 2 * 0.75 * 100
    student = _student(tmp_path, cifar_root, ["seed=0"])
    assert student["teacher/view_cache_computed"] == 0 and student["teacher/view_cache_written"] == 0
    # the rows the student found are exactly those prefilled (a sample drawn the same view twice reads it twice)
    assert student["teacher/view_cache_fill"] == pytest.approx(record["fill_after"])
    other = _student(tmp_path, cifar_root, ["seed=1"], name="other")
    assert other["teacher/view_cache_computed"] > 0


def test_pooled_views_of_an_unbounded_preset_are_cached_and_prefilled(tmp_path, cifar_root):
    pooled = [*RUN, f"data.root={cifar_root}", "data.augment=cifar_rotation", "data.view_pool=3"]
    record = prefill(_prefill_config(tmp_path, pooled), tmp_path / "prefill")
    assert record["views_per_sample"] == 3 and record["fill_after"] == 1.0
    student = _student(tmp_path, cifar_root, ["data.augment=cifar_rotation", "data.view_pool=3"])
    assert student["teacher/outputs"] == "view cache" and student["teacher/view_cache_computed"] == 0


@pytest.mark.parametrize("overrides, message", [
    (["data.augment=none"], r"would not read one: without augmentation"),
    (["data.augment=randaugment"], r"draws its parameters from a continuum; data.view_pool=V"),
    (["teacher.cache_outputs=false"], r"teacher.cache_outputs=false"),
    (["teacher.view_cache_max_gb=0"], r"more than teacher.view_cache_max_gb=0"),
    (["prefill.views=some"], r"prefill.views='some'.*allowed: all, drawn"),
    (["prefill.batch_size=0"], r"prefill.batch_size=0"),
    (["prefill.seeds=[0,-2]"], r"prefill.seeds\[1\]=-2"),
    (["prefill.seeds=[]"], r"prefill.seeds=\[\] names no student"),
])
def test_bad_settings_are_refused_before_a_teacher_is_trained(tmp_path, cifar_root, overrides, message):
    cfg = _prefill_config(tmp_path, [*RUN, f"data.root={cifar_root}", *overrides])
    with pytest.raises(ConfigError, match=message):
        prefill(cfg, tmp_path / "prefill")
    assert not (tmp_path / "teacher_store").exists()


def test_the_command_fills_the_cache_reports_it_and_exits_2_on_bad_settings(tmp_path, cifar_root, monkeypatch, capsys):
    """`kdrun-prefill` as Hydra's application, in this process (its console script is pyproject's
    `kdrun-prefill = kdrun.teachers.prefill:main`)."""
    from kdrun.teachers import prefill as command

    arguments = [*RUN, f"data.root={cifar_root}", f"paths.output_root={tmp_path}", *QUICK,
                 "trainer.enable_progress_bar=false"]
    monkeypatch.setattr(sys, "argv", ["kdrun-prefill", *arguments, "prefill.views=drawn"])
    assert command.main() is None  # Hydra's app returns nothing to its caller
    out = capsys.readouterr().out
    assert "views computed, 0 already there" in out
    # a pipe gets progress lines (a terminal a bar): a start and the end
    assert "prefill view cache: 60 views ..." in out and "prefill view cache: 60 views in" in out
    (job_dir,) = list((tmp_path / "prefill").iterdir())  # the job's own directory, as every kdrun command's
    assert json.loads((job_dir / "prefill.json").read_text())["rows_computed"] == 60  # what it did
    monkeypatch.setattr(sys, "argv", ["kdrun-prefill", *arguments, "prefill.views=every"])
    with pytest.raises(SystemExit) as exit_:
        command.main()
    assert exit_.value.code == 2
    assert "kdrun-prefill: invalid configuration: prefill.views='every'" in capsys.readouterr().err


def test_the_console_script_is_declared():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["kdrun-prefill"] == "kdrun.teachers.prefill:main"
