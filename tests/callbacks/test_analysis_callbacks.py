"""Paper 000's per-sample table, logit snapshots and eigenspace trajectories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from support import compose_config, run_in_process
from kdrun.callbacks.eigenspace import chosen_directions, second_moment_eigen
from kdrun.callbacks.snapshots import snapshot_steps
from kdrun.data.datamodule import DataSplits
from kdrun.errors import ConfigError
from kdrun.metrics.per_sample import log_odds, per_sample_outputs, per_sample_table
from kdrun.config.seeds import resolve_seeds

# 300 training samples in batches of 64: 5 steps per epoch, 10 student steps in 2 epochs.
TINY = ["data=gaussian_binary", "data.n_train=300", "data.n_val=100", "data.n_test=400",
        "teacher=mlp", "teacher.model.width=16", "student=mlp", "student.model.width=16"]
STUDENT_STEPS = 10
# dropout draws from the global generator every step: an analysis that consumed random numbers would show
WITH_DROPOUT = [*TINY, "student.model.dropout=0.2"]
ANALYSES = ["analysis.snapshots.at=[0.0,0.5,1.0]", "analysis.eigenspace.enabled=true",
            "analysis.eigenspace.top=3", "analysis.eigenspace.bottom_range=[4,9]",
            "analysis.eigenspace.num_bottom=3", "analysis.eigenspace.every_n_steps=4"]


def naive_phi(probs):
    return np.log(probs / (1 - probs))


def student_training_inputs(tmp_path, overrides) -> torch.Tensor:
    """The student's training samples, un-augmented and flattened, in dataset order."""
    cfg = compose_config(tmp_path, overrides)
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    return torch.stack([splits.source.train.dataset[int(i)][0] for i in splits.student_indices]).flatten(1)


def top_first_eigenvectors(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues, eigenvectors as columns) of the uncentred second moment, largest first."""
    z = z.double()
    values, vectors = torch.linalg.eigh(z.T @ z / len(z))
    return values.flip(0), vectors.flip(1)


def softmax(logits):
    return torch.as_tensor(logits, dtype=torch.float64).softmax(-1).numpy()


def test_log_odds_is_exact_where_probabilities_saturate():
    logits = np.array([[40.0, 0.0, 0.0], [0.0, 40.0, 0.0]], dtype=np.float32)
    with np.errstate(divide="ignore"):
        saturated = naive_phi(torch.as_tensor(logits).softmax(-1).numpy()[[0, 1], [0, 1]])
    assert np.isinf(saturated).all()  # float32 p rounds to exactly 1
    assert log_odds(logits, np.array([0, 1])) == pytest.approx([40 - np.log(2)] * 2, abs=1e-12)
    assert log_odds(logits, np.array([1, 0])) == pytest.approx([-np.logaddexp(40, 0)] * 2, abs=1e-12)


def test_per_sample_outputs_match_the_probability_formulas_on_moderate_logits():
    generator = np.random.default_rng(0)
    teacher, student = generator.normal(size=(50, 4)) * 2, generator.normal(size=(50, 4)) * 2
    labels = generator.integers(0, 4, 50)
    noise = generator.random(50) < 0.3
    out = per_sample_outputs(teacher, student, labels, noise)
    rows, top = np.arange(50), teacher.argmax(1)
    p_teacher, p_student = softmax(teacher), softmax(student)
    np.testing.assert_array_equal(out["teacher_top_class"], top)
    np.testing.assert_allclose(out["teacher_prob_top"], p_teacher.max(1))
    np.testing.assert_allclose(out["student_prob_top"], p_student[rows, top])
    np.testing.assert_allclose(out["student_prob_true"], p_student[rows, labels])
    np.testing.assert_allclose(out["teacher_phi_top"], naive_phi(p_teacher[rows, top]), rtol=1e-9)
    np.testing.assert_allclose(out["student_phi_top"], naive_phi(p_student[rows, top]), rtol=1e-9)
    np.testing.assert_allclose(out["teacher_phi_true"], naive_phi(p_teacher[rows, labels]), rtol=1e-9)
    np.testing.assert_allclose(out["student_phi_true"], naive_phi(p_student[rows, labels]), rtol=1e-9)
    np.testing.assert_array_equal(out["teacher_correct"], top == labels)
    np.testing.assert_array_equal(out["student_correct"], student.argmax(1) == labels)
    np.testing.assert_array_equal(out["noisy"], noise)
    assert not per_sample_outputs(teacher, student, labels)["noisy"].any()


def test_per_sample_table_scores_the_true_class_where_label_noise_flipped_the_label():
    teacher = np.array([[3.0, 0.0], [0.0, 3.0], [2.0, 0.0]])
    predictions = {
        "train_index": np.array([7, 3]), "train_label": np.array([0, 0]), "train_clean_label": np.array([0, 1]),
        "train_noise_mask": np.array([False, True]),
        "train_teacher_logits": teacher[:2], "train_student_logits": teacher[:2] / 2,
        "test_index": np.array([0]), "test_label": np.array([1]),
        "test_teacher_logits": teacher[2:], "test_student_logits": teacher[2:],
    }
    table = per_sample_table(predictions)
    assert list(table["split"]) == ["train", "train", "test"]
    assert list(table["index"]) == [7, 3, 0]
    assert list(table["label"]) == [0, 0, 1] and list(table["true_label"]) == [0, 1, 1]
    assert list(table["teacher_correct"]) == [True, True, False]  # against the clean label
    assert list(table["noisy"]) == [False, True, False]


def test_snapshot_steps_take_steps_and_fractions_of_training():
    assert snapshot_steps([0.0, 0.5, 1.0, 3, 5], 10) == [0, 3, 5, 10]
    assert snapshot_steps([], 10) == []


@pytest.mark.parametrize("value, message", [
    (1.5, "1.5 is outside the training run; a float is a fraction in [0, 1]"),
    (-0.1, "-0.1 is outside"),
    (11, "11 is outside the training run: steps 0..10"),
    (-1, "-1 is outside the training run: steps 0..10"),
    ("half", "'half' must be a step (int in [0, 10])"),
    (True, "True must be a step"),
])
def test_snapshot_steps_outside_training_are_refused(value, message):
    with pytest.raises(ConfigError, match="analysis.snapshots.at") as error:
        snapshot_steps([0.0, value], 10)
    assert message in str(error.value)


def test_bottom_directions_are_a_seeded_draw_without_replacement_from_the_range():
    chosen = chosen_directions(64, top=5, bottom_range=[20, 60], num_bottom=15, seed=0)
    assert chosen[:5] == [(i, "top") for i in range(5)]
    bottom = [index for index, kind in chosen if kind == "bottom"]
    assert len(set(bottom)) == 15 and all(20 <= index <= 60 for index in bottom)
    assert chosen == chosen_directions(64, top=5, bottom_range=[20, 60], num_bottom=15, seed=0)
    assert chosen != chosen_directions(64, top=5, bottom_range=[20, 60], num_bottom=15, seed=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"bottom_range": [20, 64]}, "bottom_range=[20, 64]"),
    ({"bottom_range": [30, 20]}, "bottom_range=[30, 20]"),
    ({"top": 65}, "top=65"),
    ({"num_bottom": 42}, "num_bottom=42"),
])
def test_directions_the_data_does_not_have_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        chosen_directions(64, **{"top": 5, "bottom_range": [20, 60], "num_bottom": 5, "seed": 0, **kwargs})


@pytest.mark.parametrize("center", [False, True])
def test_second_moment_eigendirections_match_numpy(center):
    x = torch.randn(90, 6, generator=torch.Generator().manual_seed(0)) + 1.0
    loader = DataLoader(TensorDataset(x, torch.zeros(90), torch.arange(90)), batch_size=32)
    values, vectors = second_moment_eigen(torch.nn.Identity(), loader, center)
    data = x.double().numpy()
    moment = (np.cov(data.T, bias=True) if center else data.T @ data / 90)
    expected = np.linalg.eigvalsh(moment)[::-1]
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(moment @ vectors.numpy(), vectors.numpy() * values.numpy(), atol=1e-9)
    assert np.all(np.diff(values.numpy()) <= 0)  # largest first


def test_eigenspace_refuses_other_architectures_before_training(tmp_path):
    with pytest.raises(ConfigError, match="student=cnn.*random_features, mlp"):
        run_in_process(tmp_path, ["analysis.eigenspace.enabled=true", "student=cnn"])
    with pytest.raises(ConfigError, match="depth=0"):
        run_in_process(tmp_path, [*TINY, "analysis.eigenspace.enabled=true", "student.model.depth=0"])
    with pytest.raises(ConfigError, match="analysis.snapshots.at: 1.5"):
        run_in_process(tmp_path, [*TINY, "analysis.snapshots.at=[1.5]"])
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


def test_analyses_write_their_files_and_leave_training_unchanged(tmp_path):
    plain, plain_dir = run_in_process(tmp_path, WITH_DROPOUT, name="plain")
    metrics, out = run_in_process(tmp_path, [*WITH_DROPOUT, *ANALYSES], name="analysed")
    assert metrics["student/steps"] == STUDENT_STEPS

    # Same training: identical final weights and metrics with and without the analyses.
    predictions, plain_predictions = np.load(out / "predictions.npz"), np.load(plain_dir / "predictions.npz")
    np.testing.assert_array_equal(predictions["test_student_logits"], plain_predictions["test_student_logits"])
    for key in ("student/test/acc", "student/test/nll", "student/train/acc", "student/batch_order_checksum"):
        assert metrics[key] == plain[key]
    assert not (plain_dir / "snapshots").exists() and not (plain_dir / "eigenspace.csv").exists()

    # Snapshots at 0.0, 0.5, 1.0 of 10 steps; the last one is the evaluated student.
    snapshots = out / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["samples.npz", "step_0.npz", "step_10.npz", "step_5.npz"]
    samples = np.load(snapshots / "samples.npz")
    for split in ("train", "test"):
        np.testing.assert_array_equal(samples[f"{split}_index"], predictions[f"{split}_index"])
        np.testing.assert_array_equal(samples[f"{split}_label"], predictions[f"{split}_label"])
        np.testing.assert_array_equal(samples[f"{split}_teacher_logits"], predictions[f"{split}_teacher_logits"])
        last = np.load(snapshots / "step_10.npz")
        np.testing.assert_allclose(last[f"{split}_student_logits"], predictions[f"{split}_student_logits"],
                                   rtol=1e-6, atol=1e-6)
    first, middle = np.load(snapshots / "step_0.npz"), np.load(snapshots / "step_5.npz")
    assert int(middle["step"]) == 5 and middle["test_student_logits"].shape == (400, 2)
    assert not np.allclose(first["test_student_logits"], last["test_student_logits"])

    # Eigenspace: input directions of the mlp, W = first layer, at steps 0, 4, 8 and the last.
    table = pd.read_csv(out / "eigenspace.csv")
    assert list(table.columns) == ["step", "direction", "kind", "eigenvalue", "norm"]
    assert sorted(table.step.unique()) == [0, 4, 8, 10]
    directions = table[table.step == 10]
    assert list(directions.direction[:3]) == [0, 1, 2] and list(directions.kind) == ["top"] * 3 + ["bottom"] * 3
    assert all(4 <= d <= 9 for d in directions.direction[3:])
    values, vectors = top_first_eigenvectors(student_training_inputs(tmp_path, WITH_DROPOUT))
    chosen = list(directions.direction)
    np.testing.assert_allclose(directions.eigenvalue, values[chosen].numpy(), rtol=1e-6)
    weight = torch.load(out / "student.pt")["features.1.weight"].double()
    expected = torch.linalg.vector_norm(weight @ vectors[:, chosen], dim=0)
    np.testing.assert_allclose(directions.norm, expected.numpy(), rtol=1e-4)
    assert not np.allclose(table[table.step == 0].norm, directions.norm)  # the weights moved
    logged = pd.read_csv(out / "logs" / "student" / "metrics.csv")
    assert {f"eigenspace/norm_{d}" for d in directions.direction} <= set(logged.columns)

    # per_sample.csv: one row per evaluated sample, phi from the saved logits.
    rows = pd.read_csv(out / "per_sample.csv")
    assert len(rows) == metrics["student/train_size"] + 400
    assert list(rows.split.unique()) == ["train", "test"]
    test_rows = rows[rows.split == "test"]
    np.testing.assert_array_equal(test_rows["index"], predictions["test_index"])
    expected = per_sample_outputs(predictions["test_teacher_logits"], predictions["test_student_logits"],
                                  predictions["test_label"])
    for column in ("teacher_phi_top", "student_phi_top", "student_phi_true", "teacher_prob_true"):
        np.testing.assert_allclose(test_rows[column], expected[column], rtol=1e-12)
    assert not test_rows.noisy.any()


def test_eigenspace_of_random_features_projects_the_head_on_feature_directions(tmp_path):
    metrics, out = run_in_process(tmp_path, [
        *TINY, "student=random_features", "student.model.num_features=24", "analysis.eigenspace.enabled=true",
        "analysis.eigenspace.top=2", "analysis.eigenspace.bottom_range=[10,20]", "analysis.eigenspace.num_bottom=2",
        "analysis.eigenspace.every_n_steps=5"])
    table = pd.read_csv(out / "eigenspace.csv")
    assert sorted(table.step.unique()) == [0, 5, 10] and len(table) == 3 * 4
    last = table[table.step == 10]
    student = torch.load(out / "student.pt")
    features = torch.relu(student_training_inputs(tmp_path, TINY) @ student["features.weight"].T)
    _, vectors = top_first_eigenvectors(features)
    expected = torch.linalg.vector_norm(student["head.weight"].double() @ vectors[:, list(last.direction)], dim=0)
    np.testing.assert_allclose(last.norm, expected.numpy(), rtol=1e-4)
