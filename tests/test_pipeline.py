"""End-to-end runs of the pipeline in-process: outputs, pairing, schedules, teacher reuse."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from support import read_metrics, run_in_process

REQUIRED_KEYS = {
    "teacher/test/acc", "teacher/test/nll", "student/test/acc", "student/test/nll", "student/test/ece",
    "student/test/agreement", "student/train/agreement", "teacher/train_size", "student/train_size",
    "teacher/wall_time_s", "student/wall_time_s", "teacher/source", "teacher/key",
}


def test_default_run_trains_an_accurate_teacher_and_writes_every_output(tmp_path):
    metrics, out = run_in_process(tmp_path, quick=False)  # the default config, as `kdrun` runs it
    assert REQUIRED_KEYS <= set(metrics)
    assert metrics["teacher/test/acc"] > 0.95
    assert metrics["student/test/acc"] > 0.9
    assert metrics["teacher/source"] == "trained"
    assert read_metrics(out) == pytest.approx(metrics)

    predictions = np.load(out / "predictions.npz")
    n_train, n_test = metrics["student/train_size"], 360
    assert predictions["train_index"].shape == (n_train,)
    assert predictions["test_student_logits"].shape == (n_test, 10)
    assert predictions["test_teacher_logits"].shape == (n_test, 10)
    # The stored logits reproduce the reported metrics.
    test_labels = predictions["test_label"]
    assert (predictions["test_student_logits"].argmax(1) == test_labels).mean() == pytest.approx(metrics["student/test/acc"])
    agreement = (predictions["test_student_logits"].argmax(1) == predictions["test_teacher_logits"].argmax(1)).mean()
    assert agreement == pytest.approx(metrics["student/test/agreement"])

    for stage in ("teacher", "student"):
        with open(out / "logs" / stage / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert any(row.get("val/acc") for row in rows)
    student = torch.load(out / "student.pt", weights_only=True)
    assert any(key.startswith("head.") for key in student)


def test_runs_differing_only_in_loss_share_init_and_batches(tmp_path):
    ce, _ = run_in_process(tmp_path, ["loss=ce"], name="ce")
    kd, _ = run_in_process(tmp_path, ["loss=kd"], name="kd")
    other_seed, _ = run_in_process(tmp_path, ["loss=kd", "seed=1"], name="seed1")
    assert ce["student/init_checksum"] == kd["student/init_checksum"]
    assert ce["student/batch_order_checksum"] == kd["student/batch_order_checksum"]
    assert ce["student/test/acc"] != kd["student/test/acc"] or ce["student/test/nll"] != kd["student/test/nll"]
    # The checks can fail: another master seed changes both ...
    assert other_seed["student/init_checksum"] != kd["student/init_checksum"]
    assert other_seed["student/batch_order_checksum"] != kd["student/batch_order_checksum"]
    # ... but not the teacher, whose seed is its own.
    assert {ce["teacher/source"], kd["teacher/source"], other_seed["teacher/source"]} == {"trained", "reused"}
    assert ce["teacher/key"] == kd["teacher/key"] == other_seed["teacher/key"]


def test_explicit_stream_seeds_decouple_init_from_data_order(tmp_path, shared_store):
    base, _ = run_in_process(tmp_path, ["seeds.init=5", "seeds.data_order=7"], name="a", store=shared_store)
    new_order, _ = run_in_process(tmp_path, ["seeds.init=5", "seeds.data_order=8"], name="b", store=shared_store)
    assert base["student/init_checksum"] == new_order["student/init_checksum"]
    assert base["student/batch_order_checksum"] != new_order["student/batch_order_checksum"]


def _schedule_rows(out):
    with open(out / "logs" / "student" / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row.get("schedule/0_ce")]


def test_late_switch_blends_over_the_window_and_logs_weights_every_step(tmp_path, shared_store):
    metrics, out = run_in_process(
        tmp_path, ["schedule=late_switch", "schedule.at=10", "schedule.window=4"], name="switch", store=shared_store)
    rows = _schedule_rows(out)
    assert len(rows) == metrics["student/steps"]  # one row per step
    weights = {int(row["step"]): (float(row["schedule/0_ce"]), float(row["schedule/1_kd"])) for row in rows}
    assert weights[9] == (1.0, 0.0)
    assert weights[10] == (1.0, 0.0)  # the blend starts at the switch point
    assert weights[12] == pytest.approx((0.5, 0.5))
    assert weights[14] == (0.0, 1.0)
    assert weights[max(weights)] == (0.0, 1.0)
    assert all(sum(w) == pytest.approx(1.0) for w in weights.values())


def test_switch_from_kd_back_to_labels_at_a_fraction(tmp_path, shared_store):
    metrics, out = run_in_process(
        tmp_path, ["schedule=late_switch", "schedule.from=kd", "schedule.to=ce", "schedule.at=0.5"], name="back",
        store=shared_store)
    rows = _schedule_rows_named(out, "schedule/0_kd", "schedule/1_ce")
    switch = round(0.5 * metrics["student/steps"])
    assert rows[switch - 1] == (1.0, 0.0) and rows[switch] == (0.0, 1.0)


def _schedule_rows_named(out, first, second):
    with open(out / "logs" / "student" / "metrics.csv") as handle:
        return {int(r["step"]): (float(r[first]), float(r[second])) for r in csv.DictReader(handle) if r.get(first)}


def test_phases_schedule_runs_a_list_of_losses(tmp_path, shared_store):
    _, out = run_in_process(tmp_path, ["schedule=phases"], name="phases", store=shared_store)
    with open(out / "logs" / "student" / "metrics.csv") as handle:
        header = next(csv.reader(handle))
    assert {"schedule/0_ce", "schedule/1_kd", "schedule/2_ce"} <= set(header)


def test_kappa_subset_sizes_reach_the_metrics(tmp_path, shared_store):
    metrics, _ = run_in_process(tmp_path, ["data.kappa=0.25", "data.stratified=true"], name="kappa", store=shared_store)
    assert metrics["student/train_size"] == round(0.25 * metrics["teacher/train_size"])
    bigger, _ = run_in_process(tmp_path, ["data.teacher_size=500", "data.kappa=2.0"], name="kappa2", store=shared_store)
    assert (bigger["teacher/train_size"], bigger["student/train_size"]) == (500, 1000)


def test_external_teacher_checkpoint_is_imported_not_retrained(tmp_path):
    first, _ = run_in_process(tmp_path, name="first")
    weights = tmp_path / "teacher_store" / first["teacher/key"] / "teacher.pt"
    imported, _ = run_in_process(tmp_path, [f"teacher.checkpoint={weights}"], name="imported")
    assert imported["teacher/source"] == "imported"
    assert imported["teacher/test/acc"] == first["teacher/test/acc"]


def test_any_zoo_model_can_be_teacher_or_student(tmp_path):
    from kdrun.models import build_model, count_parameters

    metrics, out = run_in_process(tmp_path, ["teacher=mlp", "student=cnn", "student.model.width=0.5"], name="swap")
    cnn = build_model({"name": "cnn", "num_classes": 10, "width": 0.5}, (1, 8, 8))
    mlp = build_model({"name": "mlp", "num_classes": 10}, (1, 8, 8))
    assert metrics["student/params"] == count_parameters(cnn)
    assert metrics["teacher/params"] == count_parameters(mlp)
    assert any(key.startswith("features.0.weight") for key in torch.load(out / "student.pt", weights_only=True))


def test_gaussian_binary_source_runs_end_to_end(tmp_path):
    metrics, out = run_in_process(tmp_path, ["data=gaussian_binary", "teacher=mlp", "student=mlp"], name="gauss")
    # Bayes accuracy is ~0.9992 here; a trained MLP gets close.
    assert metrics["teacher/test/acc"] > 0.97
    assert metrics["bayes/test/acc"] > 0.99 and metrics["bayes/test/acc"] >= metrics["teacher/test/acc"] - 0.005
    predictions = np.load(out / "predictions.npz")
    for split in ("train", "test"):  # p* travels with each sample's logits, rows summing to one
        probs, labels = predictions[f"{split}_oracle_probs"], predictions[f"{split}_label"]
        assert probs.shape == (len(labels), 2)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        expected_nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, None)).mean()
        assert metrics[f"bayes/{split}/nll"] == pytest.approx(expected_nll, rel=1e-5)
        assert metrics[f"bayes/{split}/acc"] == pytest.approx((probs.argmax(1) == labels).mean())
