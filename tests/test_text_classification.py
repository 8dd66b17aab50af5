"""Text classification end to end through the one pipeline: a T5 teacher and a BERT student with different tokenizers
on the embedded task (teacher store, cached outputs by sample index, evaluation), a teacher known only through its
outputs (every loss, PTLoss and its dev search), and the checks that stop bad input before training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

pytest.importorskip("transformers")

from support import read_metrics, run_in_process
from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError

DATA = ["data=toy_sentiment", "data.train_size=120", "data.val_size=40", "data.test_size=40", "data.batch_size=40",
        "teacher.epochs=1", "student.epochs=1", "logger=none", "student=bert_tiny", "student.model.config.hidden_size=16"]
TINY = [*DATA, "teacher=t5_tiny", "teacher.model.config.d_model=16"]
BERT_TEACHER = [*DATA, "teacher=bert_tiny", "teacher.model.config.hidden_size=16"]


def test_a_t5_teacher_distils_into_a_bert_student_through_the_store_and_the_cache(tmp_path):
    from kdrun.teachers import cached_outputs

    before = cached_outputs.compute_count
    metrics, run_dir = run_in_process(tmp_path, TINY, name="first", quick=False)
    assert metrics["teacher/source"] == "trained" and metrics["teacher/outputs"] == "cached"
    assert metrics["teacher/outputs_computed"] and cached_outputs.compute_count == before + 1
    for role in ("teacher", "student"):
        assert 0.0 <= metrics[f"{role}/test/acc"] <= 1.0 and np.isfinite(metrics[f"{role}/test/nll"])
    predictions = np.load(run_dir / "predictions.npz")
    assert predictions["test_teacher_logits"].shape == (40, 2) and sorted(predictions["test_index"]) == list(range(40))

    # another student seed: the same teacher and its cached outputs, looked up by sample index, not recomputed
    again, _ = run_in_process(tmp_path, [*TINY, "seed=1"], name="second", quick=False)
    assert again["teacher/source"] == "reused" and not again["teacher/outputs_computed"]
    assert cached_outputs.compute_count == before + 1
    assert again["teacher/test/acc"] == metrics["teacher/test/acc"]
    assert again["student/init_checksum"] != metrics["student/init_checksum"]


def test_the_online_and_the_cached_teacher_give_the_student_the_same_targets(tmp_path):
    cached, _ = run_in_process(tmp_path, [*TINY, "student.max_steps=2"], name="cached", quick=False)
    online, _ = run_in_process(tmp_path, [*TINY, "student.max_steps=2", "teacher.cache_outputs=false"], name="online",
                               quick=False)
    assert online["teacher/outputs"] == "online"
    assert online["student/test/nll"] == pytest.approx(cached["student/test/nll"], rel=1e-4)


def outputs_file(tmp_path, sizes=(120, 40, 40), classes=2, seed=0):
    generator = np.random.default_rng(seed)
    arrays = {split: generator.normal(size=(size, classes)) * 2 for split, size in zip(("train", "val", "test"), sizes)}
    path = tmp_path / "teacher_outputs.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_a_teacher_known_only_through_its_outputs_serves_kd_ptloss_and_evaluation(tmp_path):
    path, arrays = outputs_file(tmp_path)
    common = [*TINY, f"teacher.outputs={path}", "data.split=distill4"]
    metrics, run_dir = run_in_process(tmp_path, [*common, "loss=ptloss", "loss.epsilon=[0.5,1.0]"], name="pt",
                                      quick=False)
    assert metrics["teacher/source"] == "outputs file" and metrics["teacher/params"] == 0
    labels = np.load(run_dir / "predictions.npz")["test_label"]
    index = np.load(run_dir / "predictions.npz")["test_index"]
    expected = float((arrays["test"][index].argmax(1) == labels).mean())
    assert metrics["teacher/test/acc"] == pytest.approx(expected)
    assert np.allclose(np.load(run_dir / "predictions.npz")["test_teacher_logits"], arrays["test"][index], atol=1e-5)
    kd, _ = run_in_process(tmp_path, [*common, "loss=kd", "loss.alpha=1.0"], name="kd", quick=False)
    assert kd["teacher/test/acc"] == metrics["teacher/test/acc"]


def test_the_ptloss_search_reads_an_outputs_teacher_on_dev(tmp_path):
    from kdrun.search.ptloss import teacher_dev_probabilities

    path, arrays = outputs_file(tmp_path)
    overrides = [f"paths.output_root={tmp_path}", *TINY, f"teacher.outputs={path}", "data.split=distill4",
                 "search.dev_size=40"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="ptloss_search", overrides=overrides)
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    probs, labels, _ = teacher_dev_probabilities(cfg, tmp_path / "search")
    assert torch.allclose(probs, torch.softmax(torch.as_tensor(arrays["val"]), -1), atol=1e-6)


def test_an_outputs_teacher_cannot_run_online(tmp_path):
    path, _ = outputs_file(tmp_path)
    with pytest.raises(ConfigError, match="gives the teacher's outputs per sample only"):
        run_in_process(tmp_path, [*TINY, f"teacher.outputs={path}", "teacher.cache_outputs=false"], quick=False)
    wrong, _ = outputs_file(tmp_path, classes=3)
    with pytest.raises(ConfigError, match="3 classes per sample, but the data has 2"):
        run_in_process(tmp_path, [*TINY, f"teacher.outputs={wrong}"], quick=False)


def test_models_and_sources_of_other_kinds_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="student.model.name=mlp does not read text"):
        run_in_process(tmp_path, [*TINY[:-4], "teacher=t5_tiny", "student=mlp"], quick=False)
    with pytest.raises(ConfigError, match="teacher.model.name=hf_classifier reads text, but data.source=digits"):
        run_in_process(tmp_path, ["teacher=bert_tiny"])
    # a template without the second text of a pair fails at the preflight, not in training
    with pytest.raises(ConfigError, match="template"):
        run_in_process(tmp_path, [*TINY, "data=toy_entailment", "teacher.model.template='{0} {2}'"], quick=False)
    # ... and so does one that names only the premise, which would silently drop every hypothesis
    with pytest.raises(ConfigError, match=r"template='\{0\}' places the texts \[0\], but each sample has 2"):
        run_in_process(tmp_path, [*TINY, "data=toy_entailment", "teacher.model.template='{0}'"], quick=False)
    assert not (tmp_path / "teacher_store").exists() or not any((tmp_path / "teacher_store").iterdir())


def test_a_fine_tuned_teacher_directory_is_imported_by_teacher_checkpoint(tmp_path):
    first, run_dir = run_in_process(tmp_path, BERT_TEACHER, name="source", quick=False)
    from kdrun.teachers.store import TeacherStore  # the trained teacher, saved as transformers saves models

    store = TeacherStore(tmp_path / "teacher_store")
    entry = store.root / first["teacher/key"]
    weights = torch.load(entry / "teacher.pt", map_location="cpu", weights_only=True)
    from kdrun.models import build_model
    from support import compose_config

    cfg = compose_config(tmp_path, [*BERT_TEACHER, "data.num_classes=2"], quick=False)
    teacher = build_model(cfg.teacher.model, (), "teacher")
    teacher.load_state_dict(weights.get("state_dict", weights))
    teacher.network.save_pretrained(str(tmp_path / "fine_tuned"))
    teacher.tokenizer.save_pretrained(str(tmp_path / "fine_tuned"))
    imported, _ = run_in_process(tmp_path, [*DATA, "teacher=hf_classifier", f"teacher.model.path={tmp_path / 'fine_tuned'}",
                                            "teacher.model.max_length=64", f"teacher.checkpoint={tmp_path / 'fine_tuned'}"],
                                 name="imported", quick=False)
    assert imported["teacher/source"] == "imported"
    assert imported["teacher/test/acc"] == pytest.approx(first["teacher/test/acc"])
    assert json.loads((run_dir / "metrics.json").read_text())["teacher/key"] == first["teacher/key"]
    assert read_metrics(run_dir)["teacher/test/nll"] == pytest.approx(imported["teacher/test/nll"], rel=1e-5)


def test_text_models_train_under_bf16_autocast_with_a_bf16_teacher(tmp_path):
    """trainer.precision=bf16-mixed (meant for GPUs; CPUs run it too) with the teacher's forward pass in bf16."""
    metrics, _ = run_in_process(tmp_path, [*TINY, "trainer.precision=bf16-mixed", "teacher.precision=bf16",
                                           "student.max_steps=2", "teacher.max_steps=2"], quick=False)
    assert metrics["teacher/precision"] == "bf16"
    for key in ("teacher/test/nll", "student/test/nll", "student/test/agreement"):
        assert np.isfinite(metrics[key]), key
