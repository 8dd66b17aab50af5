"""Step metrics reach the loggers in blocks (no host sync per step), one row per step, and the
epoch-level displays (log line, progress bar) still show the loss."""

from __future__ import annotations

import csv
import logging
from types import SimpleNamespace

import pytest
import torch

from kdrun.callbacks.progress import EpochLogLine, StageProgressBar
from kdrun.engine.module import DistillationModule
from kdrun.engine.step_metrics import StepMetricBuffer

from support import run_in_process


class RecordingLogger:
    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))


def test_buffer_writes_one_row_per_step_with_its_own_names_and_numbers():
    buffer = StepMetricBuffer()
    buffer.record(0, 0, {"train/loss": torch.tensor(2.5), "train/a": torch.tensor(1.0)}, {"train/lr": 0.1})
    buffer.record(1, 0, {"train/loss": torch.tensor(1.5)}, {"schedule/0_ce": 0.25, "schedule/1_kd": 0.75})
    buffer.record(2, 1, {}, {"train/lr": 0.05})  # a step with nothing on the device
    assert len(buffer) == 3
    logger = RecordingLogger()
    buffer.flush([logger])
    assert logger.rows == [
        (0, {"train/loss": 2.5, "train/a": 1.0, "train/lr": 0.1, "epoch": 0}),
        (1, {"train/loss": 1.5, "schedule/0_ce": 0.25, "schedule/1_kd": 0.75, "epoch": 0}),
        (2, {"train/lr": 0.05, "epoch": 1}),
    ]
    assert len(buffer) == 0
    buffer.flush([logger])  # nothing pending: nothing written
    assert len(logger.rows) == 3


def test_buffer_keeps_non_finite_values_and_empties_without_loggers():
    buffer = StepMetricBuffer()
    buffer.record(4, 0, {"train/loss": torch.tensor(float("nan"))}, {})
    logger = RecordingLogger()
    buffer.flush([logger])
    assert logger.rows[0][0] == 4 and logger.rows[0][1]["train/loss"] != logger.rows[0][1]["train/loss"]
    buffer.record(5, 0, {"train/loss": torch.tensor(1.0)}, {})
    buffer.flush([])
    assert len(buffer) == 0


def test_one_copy_to_the_host_per_flush(monkeypatch):
    """Recording never reads a value; the flush reads all of them with one `tolist`."""
    buffer = StepMetricBuffer()
    reads = []
    original_tolist, original_item = torch.Tensor.tolist, torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append("tolist") or original_tolist(self))
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append("item") or original_item(self))
    for step in range(20):
        buffer.record(step, 0, {"train/loss": torch.tensor(float(step)), "train/kd": torch.tensor(1.0)}, {})
    assert reads == []
    buffer.flush([RecordingLogger()])
    assert reads == ["tolist"]


def _csv_rows(out, stage):
    with open(out / "logs" / stage / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_every_step_logged_once_and_logs_flushed_at_sync_points_only(tmp_path, monkeypatch):
    flushes = []
    original = StepMetricBuffer.flush
    # step rows per flush (the epoch's mean-loss row also goes out at the epoch's end)
    monkeypatch.setattr(StepMetricBuffer, "flush", lambda self, loggers: (
        flushes.append(sum("train/loss" in names for _, _, names, _, _ in self._pending)), original(self, loggers)))
    metrics, out = run_in_process(tmp_path, ["schedule=late_switch", "schedule.at=0.5", "student.epochs=3"])
    steps = metrics["student/steps"]
    rows = _csv_rows(out, "student")
    step_rows = [row for row in rows if row.get("train/loss")]
    assert sorted(int(row["step"]) for row in step_rows) == list(range(steps))  # each step exactly once
    assert all(row["schedule/0_ce"] and row["schedule/1_kd"] for row in step_rows)
    # a phase's loss parts appear while its weight is positive (only those losses are computed)
    assert all(bool(row.get("train/0_ce/ce")) == (float(row["schedule/0_ce"]) > 0) for row in step_rows)
    assert {int(row["epoch"]) for row in step_rows} == {0, 1, 2}
    # epoch-level rows: the epoch's mean loss and the validation metrics, three epochs each
    assert len([row for row in rows if row.get("train/loss_epoch")]) == 3
    assert len([row for row in rows if row.get("val/acc") and row.get("val/agreement")]) == 3
    # the student's buffer flushed a block of steps at a time: never one flush per step
    student_flushes = [size for size in flushes if size][-3:]
    assert sum(size > 1 for size in student_flushes) == 3


def test_epoch_mean_loss_matches_the_logged_steps(tmp_path):
    _, out = run_in_process(tmp_path, ["student.epochs=1"])
    rows = _csv_rows(out, "student")
    step_losses = [float(row["train/loss"]) for row in rows if row.get("train/loss")]
    epoch_loss = [float(row["train/loss_epoch"]) for row in rows if row.get("train/loss_epoch")]
    # the epoch mean weights each step by its batch size; the last batch may be smaller
    assert len(epoch_loss) == 1 and min(step_losses) <= epoch_loss[0] <= max(step_losses)
    assert epoch_loss[0] == pytest.approx(sum(step_losses) / len(step_losses), rel=0.05)


def test_epoch_log_line_shows_the_loss_and_validation(tmp_path, caplog, monkeypatch):
    from omegaconf import open_dict

    from support import compose_config
    from kdrun.pipeline import run

    cfg = compose_config(tmp_path, ["student.epochs=2"])
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = True  # stderr is not a terminal under pytest: one line per epoch
    with caplog.at_level(logging.INFO, logger="kdrun"):
        run(cfg, tmp_path / "run")
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("student epoch")]
    assert [line.split("  ")[0] for line in lines] == ["student epoch 1/2", "student epoch 2/2"]
    assert all("train/loss" in line and "val/acc" in line and "val/nll" in line for line in lines)
    # the line's loss is the epoch's mean loss, as logged at the epoch's end
    shown = [float(line.split("train/loss ")[1].split()[0]) for line in lines]
    logged = [float(row["train/loss_epoch"]) for row in _csv_rows(tmp_path / "run", "student")
              if row.get("train/loss_epoch")]
    assert shown == pytest.approx(logged, abs=1e-4)


def test_progress_bar_reads_the_device_loss_at_most_twice_a_second(monkeypatch):
    bar = StageProgressBar("student")
    reads = []

    class Loss:
        def __float__(self):
            reads.append(1)
            return 0.125

    trainer = SimpleNamespace(loggers=[], progress_bar_metrics={"val/acc": 0.5})
    module = SimpleNamespace(latest_loss=Loss())
    clock = [100.0]
    monkeypatch.setattr("kdrun.callbacks.progress.time.monotonic", lambda: clock[0])
    assert bar.get_metrics(trainer, module) == {"val/acc": 0.5, "loss": "0.1250"}
    clock[0] += 0.1
    assert bar.get_metrics(trainer, module)["loss"] == "0.1250" and len(reads) == 1  # shown, not re-read
    clock[0] += 0.5
    bar.get_metrics(trainer, module)
    assert len(reads) == 2
    assert "loss" not in StageProgressBar("teacher").get_metrics(trainer, SimpleNamespace(latest_loss=None))


def test_epoch_log_line_without_a_loss_yet(caplog):
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/acc": torch.tensor(0.5)},
                              current_epoch=0, max_epochs=3)
    with caplog.at_level(logging.INFO, logger="kdrun"):
        EpochLogLine("teacher").on_validation_end(trainer, SimpleNamespace(local_epoch_loss=lambda: None))
    assert caplog.records[-1].getMessage() == "teacher epoch 1/3  val/acc 0.5000"


def test_sync_every_is_at_least_one():
    from kdrun.engine.loss_schedule import LossSchedule, PhaseSpec

    schedule = LossSchedule([PhaseSpec({"name": "ce", "label_smoothing": 0.0}, None, 0, "teacher")], total_steps=1)
    module = DistillationModule(torch.nn.Linear(2, 2), None, schedule, {"name": "adam", "lr": 0.1}, 2, "teacher",
                                sync_every=0)
    assert module.sync_every == 1
