"""A pack's members against the same jobs run alone: same initial weights, same batches, same final weights and
predictions (kdrun.engine.packed_stage), per-member learning rates, one member diverging alone, exact resume.

Tolerances. In float64 (trainer.precision=64-true) a member's final weights equal its separate run's to 1e-7
relative: the stacked kernels sum in another order than the separate ones, and that rounding (~1e-16 a step)
is all that differs. Adam divides a gradient by its own running scale, so where the exact gradient is zero or
nearly so (a convolution's bias before BatchNorm, a ResNet's weights whose effect BatchNorm cancels) that
rounding becomes a step: about 1e-9 on the CNN and up to 1e-5 on a ResNet after an epoch. The networks with
BatchNorm therefore train with SGD (momentum, weight decay, cosine schedule) here; Adam's own step is checked
against torch.optim in tests/engine/test_packed_optimizer.py. In float32 (the default) an MLP's weights agree
to 1e-5 relative and its predictions to 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from support import AUGMENTED_CIFAR, compose_config

from kdrun.engine.packed_stage import member_obstacle, pack_owner, pass_signature, train_pack
from kdrun.errors import TrainingDiverged
from kdrun.pipeline import finish, prepare, run

FLOAT64 = ["trainer.precision=64-true"]
# a small teacher on a fifth of digits: the comparisons need many runs, not long ones
SMALL = ["teacher=mlp", "teacher.model.width=32", "teacher.epochs=1", "data.teacher_size=256", "data.batch_size=32"]
MLP = ["student=mlp", "student.model.width=32"]
CNN_BN = ["student=cnn", "student.model.width=0.25", "student.model.batchnorm=true", "student_recipe=sgd_cosine"]


def prepare_members(tmp_path: Path, common: list[str], members: list[list[str]], where: str = "pack") -> list:
    return [prepare(compose_config(tmp_path, [*common, *overrides]), tmp_path / where / str(k))
            for k, overrides in enumerate(members)]


def pack_and_alone(tmp_path: Path, common: list[str], members: list[list[str]]):
    """(each member's metrics from a pack, each job's metrics run alone); run directories under tmp_path."""
    prepared = prepare_members(tmp_path, common, members)
    results = train_pack(prepared, tmp_path / "packdir", [str(k) for k in range(len(members))])
    packed = [finish(member, result) for member, result in zip(prepared, results)]
    alone = [run(compose_config(tmp_path, [*common, *overrides]), tmp_path / "alone" / str(k))
             for k, overrides in enumerate(members)]
    return packed, alone


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "student.pt", map_location="cpu")


def assert_same_run(tmp_path: Path, k: int, packed: dict, alone: dict, rtol: float, weights_too: bool = True):
    assert packed["student/init_checksum"] == alone["student/init_checksum"]  # same initial weights
    assert packed["student/batch_order_checksum"] == alone["student/batch_order_checksum"]  # same batches
    assert packed["pack/size"] > 1 and "pack/size" not in alone
    if weights_too:
        mine, theirs = weights(tmp_path / "pack" / str(k)), weights(tmp_path / "alone" / str(k))
        for name in theirs:
            scale = theirs[name].double().abs().max().clamp_min(1.0)
            assert (mine[name].double() - theirs[name].double()).abs().max() <= rtol * scale, name
    with np.load(tmp_path / "pack" / str(k) / "predictions.npz") as a, \
            np.load(tmp_path / "alone" / str(k) / "predictions.npz") as b:
        for key in ("test_student_logits", "train_student_logits"):
            np.testing.assert_allclose(a[key], b[key], rtol=max(rtol, 1e-5) * 10, atol=max(rtol, 1e-5) * 10)
    for key in ("student/test/acc", "student/test/nll", "student/val/acc"):
        assert packed[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-4), key


@pytest.mark.parametrize("student", [MLP, CNN_BN], ids=["mlp", "cnn_batchnorm"])
def test_members_equal_their_separate_runs_in_float64(tmp_path, shared_store, student):
    """Seeds and losses differ inside the pack; every member ends where its separate run ends."""
    common = [*student, *FLOAT64, "student.epochs=2", f"teacher.store={shared_store}", *SMALL]
    members = [["seed=0", "loss=ce"], ["seed=1", "loss=kd"], ["seed=2", "loss=kd", "loss.temperature=2"]]
    packed, alone = pack_and_alone(tmp_path, common, members)
    for k in range(len(members)):
        assert_same_run(tmp_path, k, packed[k], alone[k], rtol=1e-7)
    assert packed[0]["pack/members"] == "0,1,2" and [m["pack/member"] for m in packed] == [0, 1, 2]


def test_resnet_members_equal_their_separate_runs(tmp_path, cifar_root, shared_store):
    """A CIFAR ResNet (BatchNorm, shortcuts) under cifar_standard views: each member's own view stream."""
    common = [*AUGMENTED_CIFAR, f"data.root={cifar_root}", "student=resnet20", "student.model.width=0.25",
              "student_recipe=sgd_cosine",
              *FLOAT64, "student.epochs=1", "teacher.cache_outputs=false", f"teacher.store={shared_store}"]
    packed, alone = pack_and_alone(tmp_path, common, [["seed=0"], ["seed=1", "loss.temperature=2"]])
    for k in range(2):
        assert_same_run(tmp_path, k, packed[k], alone[k], rtol=1e-7)


def test_members_read_and_fill_the_view_cache(tmp_path, cifar_root, shared_store):
    """Under cifar_standard the members read the teacher's outputs per (sample, view) from the view cache, each
    through its own view stream, and fill what is missing, as their separate runs do."""
    common = [*AUGMENTED_CIFAR, f"data.root={cifar_root}", f"teacher.store={shared_store}", *FLOAT64]
    packed, alone = pack_and_alone(tmp_path, common, [["seed=0"], ["seed=1", "loss.temperature=2"]])
    for k in range(2):
        assert packed[k]["teacher/outputs"] == alone[k]["teacher/outputs"] and "view" in packed[k]["teacher/outputs"]
        assert packed[k]["teacher/view_cache_hits"] + packed[k]["teacher/view_cache_computed"] > 0
        assert_same_run(tmp_path, k, packed[k], alone[k], rtol=1e-7)


def test_float32_members_match_predictions(tmp_path, shared_store):
    """The default precision, an MLP: weights to float32 rounding and the same predictions."""
    common = [*MLP, "student.epochs=2", f"teacher.store={shared_store}", *SMALL]
    packed, alone = pack_and_alone(tmp_path, common, [["seed=0"], ["seed=3", "loss=ce"]])
    for k in range(2):
        assert_same_run(tmp_path, k, packed[k], alone[k], rtol=1e-5)


def test_member_learning_rates_and_decays_are_their_own(tmp_path, shared_store):
    """Members that differ in student.optimizer.lr and weight_decay share one stacked optimiser (sgd with
    momentum here, a cosine schedule, gradients clipped) and still end where their separate runs end."""
    common = [*MLP, *FLOAT64, "student_recipe=sgd_cosine", "student.epochs=2", f"teacher.store={shared_store}",
              *SMALL, "student.gradient_clip_val=0.05"]
    members = [["student.optimizer.lr=0.05"], ["student.optimizer.lr=0.01", "student.optimizer.weight_decay=0.01"],
               ["student.optimizer.lr=0.5", "seed=2"]]  # clipped (below): each member by its own gradient's norm
    packed, alone = pack_and_alone(tmp_path, common, members)
    for k in range(3):
        assert_same_run(tmp_path, k, packed[k], alone[k], rtol=1e-7)
    assert alone[0]["student/test/nll"] != pytest.approx(alone[1]["student/test/nll"], rel=1e-3)


def test_members_read_their_own_teachers_tables(tmp_path, shared_store):
    """Two teachers (teacher.seed), both cached: one pack, each member looking up its own teacher's logits."""
    common = [*MLP, "student.epochs=1", f"teacher.store={shared_store}", *SMALL]
    members = [["teacher.seed=0"], ["teacher.seed=1"]]
    prepared = prepare_members(tmp_path, common, members)
    assert prepared[0].teacher.key != prepared[1].teacher.key
    assert pass_signature(prepared[0]) == pass_signature(prepared[1])
    results = train_pack(prepared, tmp_path / "packdir", ["0", "1"])
    packed = [finish(member, result) for member, result in zip(prepared, results)]
    alone = [run(compose_config(tmp_path, [*common, *overrides]), tmp_path / "alone" / str(k))
             for k, overrides in enumerate(members)]
    for k in range(2):
        assert_same_run(tmp_path, k, packed[k], alone[k], rtol=1e-5)
        assert packed[k]["teacher/key"] == alone[k]["teacher/key"]
        assert packed[k]["student/val/agreement"] == pytest.approx(alone[k]["student/val/agreement"], abs=1e-6)


def test_a_diverging_member_fails_alone(tmp_path, shared_store):
    """One member's rate makes its loss non-finite: it alone fails, the others finish as they would alone."""
    common = [*MLP, "student.epochs=2", f"teacher.store={shared_store}", *SMALL, "loss=ce"]
    members = [["seed=0"], ["seed=0", "student.optimizer.lr=1e8"], ["seed=1"]]
    prepared = prepare_members(tmp_path, common, members)
    results = train_pack(prepared, tmp_path / "packdir", ["0", "1", "2"])
    assert isinstance(results[1], TrainingDiverged) and "student training diverged" in str(results[1])
    finished = [finish(prepared[k], results[k]) for k in (0, 2)]
    alone = [run(compose_config(tmp_path, [*common, *members[k]]), tmp_path / "alone" / str(k)) for k in (0, 2)]
    for metrics, single in zip(finished, alone):
        assert metrics["student/test/acc"] == pytest.approx(single["student/test/acc"], abs=1e-4)
        assert metrics["student/batch_order_checksum"] == single["student/batch_order_checksum"]


def test_a_killed_pack_resumes_every_member_exactly(tmp_path, shared_store, monkeypatch):
    """Killed after its first epoch checkpoint, the pack started again ends bit for bit where an
    uninterrupted pack ends, and each member's metrics.csv has every epoch once."""
    from kdrun.engine.packed_module import PackedDistillationModule

    common = [*MLP, "student.epochs=3", f"teacher.store={shared_store}", *SMALL]
    members = [["seed=0", "loss=ce"], ["seed=1"]]
    whole = prepare_members(tmp_path, common, members, "whole")
    uninterrupted = train_pack(whole, tmp_path / "whole_pack", ["0", "1"])

    original = PackedDistillationModule.on_train_epoch_start

    def killed_in_second_epoch(self):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(PackedDistillationModule, "on_train_epoch_start", killed_in_second_epoch, raising=False)
    with pytest.raises(KeyboardInterrupt):
        train_pack(prepare_members(tmp_path, common, members, "killed"), tmp_path / "killed_pack", ["0", "1"])
    monkeypatch.undo()
    resumed = prepare_members(tmp_path, common, members, "killed")
    results = train_pack(resumed, tmp_path / "killed_pack", ["0", "1"])
    for k in range(2):
        assert results[k].module.batch_order.hexdigest() == uninterrupted[k].module.batch_order.hexdigest()
        assert results[k].metrics == uninterrupted[k].metrics
        for name, value in whole[k].plan.student.model.state_dict().items():
            assert torch.equal(resumed[k].plan.student.model.state_dict()[name], value), name
        epochs = np.loadtxt(tmp_path / "killed" / str(k) / "logs" / "student" / "metrics.csv", delimiter=",",
                            skiprows=1, usecols=0)
        assert sorted(set(epochs.tolist())) == [0, 1, 2]
        assert len(epochs) == len(np.loadtxt(tmp_path / "whole" / str(k) / "logs" / "student" / "metrics.csv",
                                             delimiter=",", skiprows=1, usecols=0))


def test_what_keeps_a_prepared_run_out_of_a_pack(tmp_path, shared_store):
    base = [*MLP, "student.epochs=1", f"teacher.store={shared_store}", *SMALL]
    plain, kappa = prepare_members(tmp_path, base, [[], ["data.kappa=0.5"]])
    assert member_obstacle(plain) is None
    assert pass_signature(plain) != pass_signature(kappa)  # fewer samples: fewer batches an epoch
    assert pack_owner([plain, kappa]).digest != pack_owner([kappa, plain]).digest
