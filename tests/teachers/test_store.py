"""Unit tests for the content-addressed teacher store and external teacher checkpoints (kdrun.teachers.store)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import torch
from torch import nn

from kdrun.errors import ConfigError
from support import STORE_IDENTITY, build_linear, get_or_train, store_worker

from kdrun.teachers.imported import load_teacher_checkpoint
from kdrun.teachers.store import META, WEIGHTS, TeacherStore, file_sha256, teacher_key

IDENTITY = STORE_IDENTITY


class TrainSpy:
    """A train callback that perturbs the weights (so each training gives new weights) and counts calls."""

    def __init__(self, metrics=None):
        self.calls = 0
        self.metrics = metrics if metrics is not None else {"val/acc": 0.5}

    def __call__(self, model: nn.Module) -> dict:
        self.calls += 1
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        return dict(self.metrics)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def tmp_leftovers(root: Path) -> list[Path]:
    return list(root.glob(".tmp-*"))


# --------------------------------------------------------------------------------------------
# claim: reuse or train once
# --------------------------------------------------------------------------------------------

def test_first_call_trains_second_reuses(tmp_path):
    store = TeacherStore(tmp_path / "store")
    spy = TrainSpy({"val/acc": 0.75})
    first = get_or_train(store, IDENTITY, build_linear, spy)
    assert spy.calls == 1
    assert first.source == "trained"
    assert first.key == teacher_key(IDENTITY)
    assert first.path == tmp_path / "store" / first.key

    again = TrainSpy()
    second = get_or_train(store, dict(IDENTITY), build_linear, again)
    assert again.calls == 0
    assert second.source == "reused"
    assert second.key == first.key and second.path == first.path
    assert same_weights(first.model, second.model)
    assert second.meta == first.meta
    assert second.meta["metrics"] == {"val/acc": 0.75}


def test_identity_key_ignores_dict_order_but_not_values():
    reordered = dict(reversed(list(IDENTITY.items())))
    assert teacher_key(reordered) == teacher_key(IDENTITY)
    assert teacher_key({**IDENTITY, "seed": 1}) != teacher_key(IDENTITY)
    assert len(teacher_key(IDENTITY)) == 20


def test_different_identity_trains_again(tmp_path):
    store = TeacherStore(tmp_path)
    spy = TrainSpy()
    a = get_or_train(store, IDENTITY, build_linear, spy)
    b = get_or_train(store, {**IDENTITY, "seed": 1}, build_linear, spy)
    assert spy.calls == 2
    assert a.source == b.source == "trained"
    assert a.key != b.key and a.path != b.path
    assert a.path.is_dir() and b.path.is_dir()
    # both remain reusable
    c = get_or_train(store, IDENTITY, build_linear, spy)
    assert spy.calls == 2 and c.source == "reused" and same_weights(a.model, c.model)


def test_entry_layout_and_meta(tmp_path):
    store = TeacherStore(tmp_path / "store")
    result = get_or_train(store, IDENTITY, build_linear, TrainSpy({"val/acc": 0.9}))
    entry = result.path
    assert sorted(p.name for p in entry.iterdir()) == sorted([WEIGHTS, META])
    meta = json.loads((entry / META).read_text())
    assert meta["weights_sha256"] == file_sha256(entry / WEIGHTS)
    assert meta["identity"] == IDENTITY
    assert meta["key"] == result.key
    assert meta["metrics"] == {"val/acc": 0.9}
    assert "created" in meta
    assert result.meta == meta
    state = torch.load(entry / WEIGHTS, weights_only=True)
    assert set(state) == {"weight", "bias"}
    assert all(torch.equal(state[k], result.model.state_dict()[k]) for k in state)
    assert tmp_leftovers(tmp_path / "store") == []
    assert not (tmp_path / "store" / ".corrupt").exists()


def test_training_failure_leaves_no_entry_and_the_next_call_trains(tmp_path):
    store = TeacherStore(tmp_path)

    def broken(model):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        get_or_train(store, IDENTITY, build_linear, broken)
    assert not store.entry(teacher_key(IDENTITY)).exists()
    assert tmp_leftovers(tmp_path) == []
    spy = TrainSpy()
    assert get_or_train(store, IDENTITY, build_linear, spy).source == "trained" and spy.calls == 1


def _corrupt_garbage(entry: Path) -> None:
    (entry / WEIGHTS).write_bytes(b"this is not a torch file" * 10)


def _corrupt_flip(entry: Path) -> None:
    data = bytearray((entry / WEIGHTS).read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 8):
        data[i] ^= 0xFF
    (entry / WEIGHTS).write_bytes(bytes(data))


def _corrupt_truncate(entry: Path) -> None:
    data = (entry / WEIGHTS).read_bytes()
    (entry / WEIGHTS).write_bytes(data[: len(data) // 3])


def _corrupt_consistent_garbage(entry: Path) -> None:
    """Garbage weights whose checksum is recorded: only loading can tell."""
    _corrupt_garbage(entry)
    meta = json.loads((entry / META).read_text())
    meta["weights_sha256"] = file_sha256(entry / WEIGHTS)
    (entry / META).write_text(json.dumps(meta))


def _corrupt_wrong_shape(entry: Path) -> None:
    torch.save(nn.Linear(5, 3).state_dict(), entry / WEIGHTS)
    meta = json.loads((entry / META).read_text())
    meta["weights_sha256"] = file_sha256(entry / WEIGHTS)
    (entry / META).write_text(json.dumps(meta))


def _corrupt_meta(entry: Path) -> None:
    (entry / META).write_text("{not json")


def _corrupt_missing_weights(entry: Path) -> None:
    (entry / WEIGHTS).unlink()


@pytest.mark.parametrize("corrupt", [
    _corrupt_garbage, _corrupt_flip, _corrupt_truncate, _corrupt_consistent_garbage, _corrupt_wrong_shape,
    _corrupt_meta, _corrupt_missing_weights,
])
def test_corrupt_entry_is_quarantined_and_rebuilt(tmp_path, corrupt):
    root = tmp_path / "store"
    store = TeacherStore(root)
    first = get_or_train(store, IDENTITY, build_linear, TrainSpy())
    corrupt(first.path)
    bad_files = sorted(p.name for p in first.path.iterdir())

    spy = TrainSpy()
    second = get_or_train(store, IDENTITY, build_linear, spy)
    assert spy.calls == 1
    assert second.source == "trained"
    assert second.path == first.path

    graveyard = root / ".corrupt"
    moved = list(graveyard.iterdir())
    assert len(moved) == 1
    assert moved[0].name.startswith(first.key)
    assert sorted(p.name for p in moved[0].iterdir()) == bad_files

    # the new entry is intact and loads on the next call
    meta = json.loads((second.path / META).read_text())
    assert meta["weights_sha256"] == file_sha256(second.path / WEIGHTS)
    third_spy = TrainSpy()
    third = get_or_train(store, IDENTITY, build_linear, third_spy)
    assert third_spy.calls == 0 and third.source == "reused"
    assert same_weights(third.model, second.model)
    assert tmp_leftovers(root) == []


# --------------------------------------------------------------------------------------------
# concurrency
# --------------------------------------------------------------------------------------------

def test_concurrent_jobs_train_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    store_root, train_log = tmp_path / "store", tmp_path / "train.log"
    barrier = ctx.Barrier(3)
    outs = [tmp_path / f"out{i}.pt" for i in range(3)]
    procs = [ctx.Process(target=store_worker, args=(str(store_root), str(train_log), str(out), barrier))
             for out in outs]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=120)
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()

    lines = train_log.read_text().splitlines()
    assert len(lines) == 1, lines
    results = [torch.load(out, weights_only=True) for out in outs]
    assert sorted(r["source"] for r in results) == ["reused", "reused", "trained"]
    reference = results[0]["state"]
    for r in results[1:]:
        assert r["state"].keys() == reference.keys()
        assert all(torch.equal(r["state"][k], reference[k]) for k in reference)
    stored = torch.load(store_root / teacher_key(IDENTITY) / WEIGHTS, weights_only=True)
    assert all(torch.equal(stored[k], reference[k]) for k in reference)
    assert tmp_leftovers(store_root) == []
    assert not (store_root / ".corrupt").exists()


# --------------------------------------------------------------------------------------------
# load_teacher_checkpoint
# --------------------------------------------------------------------------------------------

class NotWeights:
    """An arbitrary picklable object: must not be unpickled from a teacher checkpoint."""

    def __init__(self):
        self.payload = [1, 2, 3]


def test_load_plain_state_dict(tmp_path):
    source = nn.Linear(4, 3)
    path = tmp_path / "teacher.pt"
    torch.save(source.state_dict(), path)
    result = load_teacher_checkpoint(path, nn.Linear(4, 3))
    assert result.source == "imported" and result.key is None and result.path == path
    assert same_weights(result.model, source)
    assert result.meta == {"checkpoint_sha256": file_sha256(path)}
    # a string path works too
    assert same_weights(load_teacher_checkpoint(str(path), nn.Linear(4, 3)).model, source)


@pytest.mark.parametrize("prefix", ["student.", "model."])
def test_load_lightning_style_checkpoint(tmp_path, prefix):
    source = nn.Linear(4, 3)
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 30, "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"{prefix}{k}": v for k, v in source.state_dict().items()}}, path)
    result = load_teacher_checkpoint(path, nn.Linear(4, 3))
    assert result.source == "imported"
    assert same_weights(result.model, source)


def test_load_lightning_state_dict_without_prefix(tmp_path):
    source = nn.Linear(4, 3)
    path = tmp_path / "plain_in_wrapper.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    assert same_weights(load_teacher_checkpoint(path, nn.Linear(4, 3)).model, source)


def test_load_checkpoint_of_a_distillation_module(tmp_path):
    from kdrun.engine.module import DistillationModule
    from kdrun.engine.loss_schedule import LossSchedule, PhaseSpec

    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    schedule = LossSchedule([PhaseSpec({"name": "ce", "label_smoothing": 0.0}, None, 0, "student")], total_steps=1)
    module = DistillationModule(student, teacher, schedule, {"name": "sgd", "lr": 0.1}, 3, "student")
    path = tmp_path / "student.ckpt"
    torch.save({"state_dict": module.state_dict()}, path)
    result = load_teacher_checkpoint(path, nn.Linear(4, 3))
    assert same_weights(result.model, student)


@pytest.mark.parametrize("wrong", [nn.Linear(5, 3), nn.Sequential(nn.Linear(4, 3))])
def test_wrong_architecture_names_the_path(tmp_path, wrong):
    path = tmp_path / "other_arch.pt"
    torch.save(wrong.state_dict(), path)
    with pytest.raises(ConfigError) as info:
        load_teacher_checkpoint(path, nn.Linear(4, 3))
    message = str(info.value)
    assert str(path) in message
    assert "does not fit the teacher architecture" in message


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(NotWeights(), path)
    with pytest.raises(ConfigError) as info:
        load_teacher_checkpoint(path, nn.Linear(4, 3))
    assert str(path) in str(info.value)
    assert "could not be read as weights" in str(info.value)


def test_pickled_object_inside_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "evil_nested.ckpt"
    torch.save({"state_dict": nn.Linear(4, 3).state_dict(), "hparams": NotWeights()}, path)
    with pytest.raises(ConfigError, match="could not be read as weights"):
        load_teacher_checkpoint(path, nn.Linear(4, 3))


@pytest.mark.parametrize("payload", [[torch.zeros(3)], torch.zeros(3), {"state_dict": [1, 2]}])
def test_checkpoint_without_a_state_dict(tmp_path, payload):
    path = tmp_path / "no_state.pt"
    torch.save(payload, path)
    with pytest.raises(ConfigError, match="holds no state_dict") as info:
        load_teacher_checkpoint(path, nn.Linear(4, 3))
    assert str(path) in str(info.value)


def test_missing_or_garbage_checkpoint_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.pt"):
        load_teacher_checkpoint(tmp_path / "missing.pt", nn.Linear(4, 3))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ConfigError, match="garbage.pt"):
        load_teacher_checkpoint(garbage, nn.Linear(4, 3))
