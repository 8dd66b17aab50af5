"""Which jobs of a sweep may train together (kdrun.jobs.packing), decided from their configs alone."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from support import compose_config

from kdrun.errors import ConfigError
from kdrun.jobs.packing import (PackOptions, group_jobs, pack_obstacle, pack_signature, split_to_budget,
                                submission_units)


def configs(tmp_path, *jobs: list[str]):
    return [compose_config(tmp_path, overrides) for overrides in jobs]


def test_member_settings_pack_and_shared_ones_split(tmp_path):
    jobs = configs(tmp_path, ["seed=0", "loss=ce"], ["seed=1", "loss=kd", "loss.temperature=2"],
                   ["schedule=late_switch", "student.optimizer.lr=0.01", "+loss_options.kd.alpha=0.5"],
                   ["student.model.width=16"], ["student.model.width=16", "seed=4"], ["student=cnn"])
    packs, alone = group_jobs(jobs, PackOptions())
    assert packs == [[0, 1, 2], [3, 4]]
    assert alone == {5: alone[5]} and "student.model" in alone[5]  # the key that keeps it apart is named


def test_a_synthetic_source_drawn_per_seed_still_packs(tmp_path):
    first, second = configs(tmp_path, ["data=gaussian_mixture", "seed=0"], ["data=gaussian_mixture", "seed=1"])
    assert first.data.generator_seed != second.data.generator_seed
    assert pack_signature(first) == pack_signature(second)


@pytest.mark.parametrize("overrides, reason", [
    (["data=cifar10", "data.augment=randaugment"], "data.augment=randaugment draws fresh views"),
    (["analysis.eigenspace.enabled=true"], "analysis callbacks"),
    (["trainer.devices=2"], "a pack trains on one device"),
    (["student=gpt"], "student.model.name=gpt"),
])
def test_jobs_that_cannot_pack_say_why(tmp_path, overrides, reason):
    (cfg,) = configs(tmp_path, overrides)
    assert reason in pack_obstacle(cfg)
    assert pack_obstacle(configs(tmp_path, [])[0]) is None


def test_strict_packing_names_the_key_that_differs(tmp_path):
    jobs = configs(tmp_path, ["seed=0"], ["seed=1"], ["student.epochs=3"], ["student.epochs=3", "seed=1"])
    with pytest.raises(ConfigError, match=r"jobs 0 and 2 cannot train in one pack: they differ in "
                                          r"student.epochs=2 vs 3"):
        group_jobs(jobs, PackOptions(strict=True))
    with pytest.raises(ConfigError, match="job 0 cannot train in a pack: analysis callbacks"):
        group_jobs(configs(tmp_path, ["analysis.eigenspace.enabled=true"], []), PackOptions(strict=True))
    assert group_jobs(jobs[:2], PackOptions(strict=True)) == ([[0, 1]], {})


def test_packs_are_cut_to_the_memory_budget_and_the_maximum_size():
    assert split_to_budget([0, 1, 2, 3, 4], [1.0] * 5, budget_bytes=2.5, max_size=16) == [[0, 1], [2, 3], [4]]
    assert split_to_budget([0, 1, 2, 3, 4], [1.0] * 5, budget_bytes=100, max_size=2) == [[0, 1], [2, 3], [4]]
    assert split_to_budget([0, 1], [5.0, 1.0], budget_bytes=2.0, max_size=16) == [[0], [1]]  # too big: alone


@pytest.mark.parametrize("options, message", [
    ({"max_pack_size": 0}, "hydra.launcher.max_pack_size=0; allowed: a whole number >= 1"),
    ({"max_pack_size": 2.5}, "hydra.launcher.max_pack_size=2.5"),
    ({"memory_budget_gb": -1}, "hydra.launcher.memory_budget_gb=-1; allowed: a number of GiB > 0"),
    ({"strict": "yes"}, "hydra.launcher.strict='yes'"),
    ({"submit": "pbs"}, "hydra.launcher.submit='pbs'; allowed: null"),
])
def test_bad_pack_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        PackOptions.from_config(OmegaConf.create(options))


def test_a_submitted_job_trains_one_pack_or_one_lone_job():
    assert submission_units([[0, 2, 4], [1, 3]], {5: "an analysis callback"}, max_size=2) == [[0, 2], [4], [1, 3], [5]]
