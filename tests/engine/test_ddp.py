"""Multi-process training (trainer=ddp): equal results to one process, complete outputs, refused combinations."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from support import compose_config, kdrun_command, read_metrics

TINY = ["data=gaussian_binary", "data.n_train=256", "data.n_val=64", "data.n_test=256",
        "teacher=mlp", "teacher.model.width=16", "student=mlp", "student.model.width=16",
        "teacher.epochs=2", "student.epochs=3", "trainer.enable_progress_bar=false"]
# Compared up to float32 summation order: DDP averages two half-batch gradients where one process
# sums the whole batch, which moves each step by ~1 ulp; over 28 Adam steps the measured gap is
# ~1e-7 (2026-11, this machine). 1e-5 leaves room without hiding a wrong batch or a missed sync,
# which move the metrics by >1e-3. Accuracy-type metrics must agree exactly on these 256 points.
TOLERANCE = 1e-5
NOT_COMPARED = ("wall_time_s", "teacher/key", "teacher/outputs", "data/fast_path")


def one_and_two_processes(overrides: list[str], tmp_path):
    """(metrics of one process at batch 32, metrics of 2 DDP processes at 16 each, the DDP command's result):
    the same global batch."""
    env = {"KDRUN_OUTPUT_ROOT": str(tmp_path)}
    single = kdrun_command([*overrides, "data.batch_size=32", f"hydra.run.dir={tmp_path / 'single'}"], tmp_path, env)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = kdrun_command([*overrides, "data.batch_size=16", "trainer=ddp", "trainer.devices=2",
                         "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'ddp'}"], tmp_path, env)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp"), ddp


@pytest.mark.slow  # several processes or sweep jobs: the optional `pytest -m slow` job
def test_two_processes_give_one_process_metrics_and_complete_outputs(tmp_path):
    # the global batch is equal: 2 processes x 16 = 1 process x 32; the MLP has no BatchNorm
    one, two, ddp = one_and_two_processes(TINY, tmp_path)
    assert set(one) == set(two)
    for key, value in one.items():
        if any(part in key for part in NOT_COMPARED):
            continue
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, abs=TOLERANCE), key
        else:
            assert two[key] == value, key  # incl. the batch-order and init checksums
    assert two["student/train_size"] == 256 and two["student/steps"] == 3 * 256 // 32

    # rank 0 alone evaluated the whole splits: every index once, none missing
    predictions = np.load(tmp_path / "ddp" / "predictions.npz")
    assert sorted(predictions["train_index"].tolist()) == list(range(256))
    assert sorted(predictions["test_index"].tolist()) == list(range(256))
    assert (tmp_path / "ddp" / "student.pt").exists() and (tmp_path / "ddp" / "per_sample.csv").exists()
    # the teacher was trained by both ranks together and written to the store once
    assert two["teacher/source"] == "trained"
    assert len(list((tmp_path / "teacher_store").glob("*/meta.json"))) == 2  # one per batch size
    assert ddp.stdout.count("done in") == 1


@pytest.mark.slow
def test_a_language_model_distils_on_two_processes_as_on_one(tmp_path):
    """Windows shard across ranks like images: two processes with half the batch give one process's metrics."""
    text = ["data=pydoc_topics", "data.max_chars=8000", "data.block_size=16", "teacher=micro_gpt", "student=micro_gpt",
            "teacher.model.n_embd=16", "student.model.n_embd=16", "teacher.max_steps=6", "student.max_steps=6",
            "evaluation.sample_tokens=0", "trainer.enable_progress_bar=false"]
    one, two, _ = one_and_two_processes(text, tmp_path)
    for key in ("student/test/nll", "student/test/acc", "student/test/agreement", "teacher/test/nll"):
        assert two[key] == pytest.approx(one[key], abs=TOLERANCE), key
    assert two["student/batch_order_checksum"] == one["student/batch_order_checksum"]


@pytest.mark.slow
def test_text_models_distil_on_two_processes_as_on_one(tmp_path):
    """Raw-text batches shard across ranks like tensors: a T5 teacher and a BERT student (each tokenizing its own
    share), without dropout, give one process's metrics on two."""
    pytest.importorskip("transformers")
    text = ["data=toy_sentiment", "data.train_size=128", "data.val_size=32", "data.test_size=32", "teacher=t5_tiny",
            "student=bert_tiny", "teacher.model.config.d_model=16", "teacher.model.config.dropout_rate=0.0",
            "student.model.config.hidden_size=16", "student.model.config.hidden_dropout_prob=0.0",
            "student.model.config.attention_probs_dropout_prob=0.0", "teacher.max_steps=4", "student.max_steps=4",
            "trainer.enable_progress_bar=false", "logger=none"]
    one, two, _ = one_and_two_processes(text, tmp_path)
    for key in ("student/test/nll", "student/test/acc", "student/test/agreement", "teacher/test/nll"):
        assert two[key] == pytest.approx(one[key], abs=TOLERANCE), key
    assert two["student/batch_order_checksum"] == one["student/batch_order_checksum"]


def test_sampler_shards_cover_the_global_batches_and_pad_only_training():
    from kdrun.data.samplers import EpochSeededSampler

    one = list(EpochSeededSampler(10, order_seed=3))
    ranks = [list(EpochSeededSampler(10, order_seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [x for pair in zip(*ranks) for x in pair] == one  # interleaved shards = the one-process order
    padded = [list(EpochSeededSampler(9, 3, 2, r)) for r in (0, 1)]
    assert len(padded[0]) == len(padded[1]) == 5 and sorted(set(padded[0] + padded[1])) == list(range(9))
    unpadded = [list(EpochSeededSampler(9, None, 2, r, pad=False)) for r in (0, 1)]
    assert sorted(unpadded[0] + unpadded[1]) == list(range(9))  # evaluation: every sample exactly once
    sampler = EpochSeededSampler(10, order_seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != one and list(EpochSeededSampler(10, order_seed=3)) == one  # (seed, epoch) only


def test_ddp_leaves_the_frozen_teacher_out_of_gradient_and_buffer_sync(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from kdrun.engine.module import DistillationModule
    from kdrun.engine.loss_schedule import LossSchedule, PhaseSpec

    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    schedule = LossSchedule([PhaseSpec({"name": "ce", "label_smoothing": 0.0}, None, 0, "student")], total_steps=1)
    module = DistillationModule(nn.Linear(4, 2), teacher, schedule, {"name": "adam", "lr": 0.01}, 2, "student",
                                teacher_outputs={"train": torch.zeros(3, 2)})
    module.setup("fit")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(module)
        synced = {id(p) for p in wrapped._module_parameters if p.requires_grad}
        assert synced == {id(p) for p in module.student.parameters()}
        assert all(not p.requires_grad for p in module.teacher.parameters()) and not module.teacher.training
        broadcast = {id(b) for b in wrapped.modules_buffers}
        assert not broadcast & {id(b) for b in [*module.teacher.buffers(), module.teacher_tables.train_logits]}
    finally:
        dist.destroy_process_group()


def _launcher(target, **options):
    return {"_target_": target, **options}


def test_sweeps_with_several_processes_per_job_only_through_slurm_tasks(tmp_path, monkeypatch):
    from kdrun.engine import distributed
    from kdrun.errors import ConfigError

    cfg = compose_config(tmp_path, ["trainer=ddp", "trainer.accelerator=cpu"])
    monkeypatch.setattr(distributed, "_multirun_launcher",
                        lambda: _launcher("hydra._internal.core_plugins.basic_launcher.BasicLauncher"))
    with pytest.raises(ConfigError, match=r"BasicLauncher.*supported: a single run .*tasks_per_node"):
        distributed.check_distributed_support(cfg)
    monkeypatch.setattr(distributed, "_multirun_launcher",
                        lambda: _launcher("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                                          tasks_per_node=1))
    with pytest.raises(ConfigError, match=r"tasks_per_node=1 but trainer.devices=2"):
        distributed.check_distributed_support(cfg)
    monkeypatch.setattr(distributed, "_multirun_launcher",
                        lambda: _launcher("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                                          tasks_per_node=2))
    distributed.check_distributed_support(cfg)  # one SLURM task per device: supported
    monkeypatch.setattr(distributed, "_multirun_launcher", lambda: None)
    distributed.check_distributed_support(cfg)  # a single run: Lightning starts the ranks


@pytest.mark.slow  # the real command; the refusal itself is tested above without a process
def test_multirun_with_the_basic_launcher_fails_before_training(tmp_path):
    result = kdrun_command(["-m", *TINY, "trainer=ddp", "trainer.accelerator=cpu", "seed=0,1"], tmp_path,
                           {"KDRUN_OUTPUT_ROOT": str(tmp_path)})
    assert result.returncode != 0
    assert "supported: a single run" in result.stdout + result.stderr
    assert not (tmp_path / "teacher_store").exists()  # nothing trained


def test_sync_batchnorm_is_refused_on_cpu(tmp_path):
    from kdrun.engine.distributed import check_distributed_support
    from kdrun.errors import ConfigError

    cfg = compose_config(tmp_path, ["trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=true"])
    with pytest.raises(ConfigError, match=r"trainer.sync_batchnorm=true needs GPUs.*allowed: trainer.sync_batchnorm=false"):
        check_distributed_support(cfg)


def test_world_size_follows_devices_and_nodes():
    from kdrun.engine.distributed import training_world_size

    assert training_world_size({"devices": 2, "num_nodes": 1}) == 2
    assert training_world_size({"devices": [0, 1, 2], "num_nodes": 2}) == 6
    assert training_world_size({"devices": "auto", "accelerator": "cpu"}) == 1
    assert training_world_size({"devices": 1}) == 1
