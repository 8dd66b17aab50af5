"""Bad input stops the run before training with a message naming the value and what is allowed,
and leaves the teacher store and earlier runs untouched."""

from __future__ import annotations

import pytest

from conftest import compose_config, run_in_process
from kdrun.errors import ConfigError
from kdrun.pipeline import run

CASES = [
    (["data.kappa=0"], ["data.kappa=0", "> 0"]),
    (["data.kappa=-0.5"], ["data.kappa=-0.5", "> 0"]),
    (["data.kappa=0.001"], ["data.kappa=0.001", "fewer than one per class", "kappa >="]),
    (["data.kappa=3.0"], ["data.kappa=3.0", "pool has only", "kappa <="]),
    (["loss.alpha=1.5"], ["alpha=1.5", "[0, 1]"]),
    (["loss.alpha=-0.1"], ["alpha=-0.1", "[0, 1]"]),
    (["loss.temperature=0"], ["temperature=0", "> 0"]),
    (["loss.temperature=-2"], ["temperature=-2", "> 0"]),
    (["schedule=late_switch", "schedule.at=1.5"], ["schedule.at=1.5", "[0, 1]"]),
    (["schedule=late_switch", "schedule.at=100000"], ["schedule.at=100000", "steps 0.."]),
    (["schedule=late_switch", "schedule.at=-3"], ["schedule.at=-3", "steps 0.."]),
    (["teacher.model.num_classes=5"], ["teacher.model.num_classes=5", "student.model.num_classes=10"]),
    (["teacher.model.num_classes=5", "student.model.num_classes=5"], ["5 classes", "allowed: 10"]),
    (["teacher.checkpoint=/nonexistent/teacher.pt"], ["/nonexistent/teacher.pt", "no such file"]),
    (["schedule=late_switch", "schedule.to=kdd"], ["schedule.to='kdd'", "allowed: ce, ", "kd, ", "mse_logits"]),
    (["schedule=phases", "schedule.phases=[{loss: ce, until: 0.5}, {loss: nope}]"], ["'nope'", "allowed:"]),
    (["+loss.beta=3"], ["beta", "allowed: alpha, t_squared, temperature"]),
    (["student.model.name=resnet9000"], ["resnet9000", "allowed: ", "cnn, logistic_regression, mlp"]),
    (["data=gaussian_binary", "student=cnn", "teacher=mlp"], ["cnn needs image input"]),
    (["student.epochs=0"], ["student.epochs=0", ">= 1"]),
    (["+model=cnn"], ["model=cnn", "teacher=", "student="]),
]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """An output root holding a finished run and its stored teacher."""
    root = tmp_path_factory.mktemp("outputs")
    metrics, _ = run_in_process(root, name="earlier", overrides=["teacher.epochs=1", "student.epochs=1"])
    return root, metrics


@pytest.mark.parametrize("overrides, expected", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_rejected_before_training(earlier_run, overrides, expected, tree_snapshot):
    root, earlier = earlier_run
    before = tree_snapshot(root)
    cfg = compose_config(root, ["teacher.epochs=1", "student.epochs=1", *overrides])
    with pytest.raises(ConfigError) as error:
        run(cfg, root / "runs" / "bad")
    for fragment in expected:
        assert fragment in str(error.value)
    assert tree_snapshot(root) == before, "a rejected run changed files on disk"
    assert not (root / "runs" / "bad").exists()
    assert (root / "teacher_store" / earlier["teacher/key"] / "teacher.pt").is_file()
