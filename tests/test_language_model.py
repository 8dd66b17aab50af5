"""Language-model distillation end to end: a GPT teacher and student on the embedded corpus through the
same pipeline (store, cached per-token outputs, token-level losses, metrics, probe, samples, errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from support import run_in_process
from kdrun.errors import ConfigError
from kdrun.teachers.cached_outputs import CACHE_FILE

TINY_GPT = ["teacher=micro_gpt", "student=micro_gpt", "teacher.model.n_embd=32", "student.model.n_embd=32"]
TEXT = ["data=pydoc_topics", "data.max_chars=30000", "data.block_size=16", *TINY_GPT, "teacher.max_steps=200",
        "student.max_steps=20", "student.val_every_n_epochs=1000", "logger=none", "evaluation.sample_tokens=20"]


@pytest.fixture(scope="module")
def adversarial_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lm")
    metrics, out = run_in_process(tmp_path, [*TEXT, "data.corruption=the_to_tha", "loss=kd", "loss.alpha=0.9",
                                             "loss.temperature=1.0", "evaluation.saved_positions=100"], quick=False)
    return metrics, out


def test_a_gpt_distils_per_token_from_cached_teacher_outputs(adversarial_run):
    metrics, out = adversarial_run
    assert metrics["teacher/outputs"] == "cached" and metrics["teacher/outputs_cache"] == "store"
    store_entry = out.parents[1] / "teacher_store" / metrics["teacher/key"]
    tables = torch.load(store_entry / CACHE_FILE, weights_only=True)["logits"]
    windows, time, classes = tables["train"].shape
    assert (windows, time) == (metrics["teacher/train_size"], 16)  # one row of logits per window position
    assert classes > 50 and tables["train"].dtype == torch.float32
    for role in ("teacher", "student"):
        assert metrics[f"{role}/test/perplexity"] == pytest.approx(np.exp(metrics[f"{role}/test/nll"]))
        assert 0 < metrics[f"{role}/test/acc"] < 1
    assert "student/test/auroc" not in metrics  # not over a vocabulary
    assert {"student/test/agreement", "student/test/js_divergence", "student/test/rank_disagreement",
            "student/test/activation_distance", "student/test/agreement_teacher_incorrect"} <= set(metrics)


def test_predictions_hold_token_positions_and_reproduce_the_metrics_there(adversarial_run):
    metrics, out = adversarial_run
    predictions = np.load(out / "predictions.npz")
    assert predictions["test_student_logits"].shape[0] == 100  # evaluation.saved_positions
    assert predictions["test_position"][:17].tolist() == [*range(16), 0]
    assert np.all(predictions["test_index"][:16] == predictions["test_index"][0])
    assert (out / "per_sample.csv").is_file()


def test_the_corrupted_teacher_is_probed_on_clean_text(adversarial_run):
    metrics, out = adversarial_run
    for role in ("teacher", "student"):
        assert metrics[f"{role}/test/probe_positions"] > 5  # whole words "the" in the clean test text
        assert 0 <= metrics[f"{role}/test/probe_adversarial_rate"] <= 1
    # the teacher's training text had no "the": after "th" it predicts "a", not the clean text's "e"
    assert metrics["teacher/test/probe_adversarial_rate"] > metrics["teacher/test/probe_expected_rate"]
    assert metrics["teacher/test/probe_adversarial_prob"] > 0.3


def test_samples_continue_prompts_for_both_models(adversarial_run):
    _, out = adversarial_run
    text = (out / "samples.txt").read_text()
    assert text.count("=== prompt") == 3 and text.count("--- teacher ---") == 3 and text.count("--- student ---") == 3


@pytest.mark.slow  # four runs: about 12 s
def test_cache_budget_float16_top_k_and_online_teachers_agree(tmp_path):
    runs = {}
    for name, options in (("online", ["teacher.cache_max_mb=0.01"]), ("float16", ["teacher.cache_dtype=float16"]),
                          ("top_k", ["teacher.cache_top_k=8"]), ("float32", [])):
        runs[name], _ = run_in_process(tmp_path, [*TEXT, "loss=kd", "data.max_chars=12000", "teacher.max_steps=100",
                                                  "evaluation.sample_tokens=0", *options], name=name, quick=False)
    assert runs["online"]["teacher/outputs"] == "online"  # auto: the tables exceed the budget
    assert runs["float32"]["teacher/outputs"] == "cached"
    assert runs["float16"]["teacher/outputs"] == "cached float16" and runs["top_k"]["teacher/outputs"] == "cached top-8"
    # the same teacher; float32 cache and online teacher give the same student, float16 a student within rounding
    assert runs["online"]["student/test/nll"] == pytest.approx(runs["float32"]["student/test/nll"], rel=1e-5)
    assert runs["float16"]["student/test/nll"] == pytest.approx(runs["float32"]["student/test/nll"], rel=1e-3)
    # top-8 of the vocabulary: an approximation (tests/teachers/test_top_k.py measures its loss), a close student
    assert runs["top_k"]["student/test/nll"] == pytest.approx(runs["float32"]["student/test/nll"], rel=0.05)


@pytest.mark.parametrize("overrides, message", [
    (["teacher.model.num_classes=50", "student.model.num_classes=50"],
     r"teacher.model.num_classes=50 but data.source=pydoc_topics has a vocabulary of \d+ tokens"),
    (["evaluation.sample_prompts=[\"snow ☃\"]"], r"evaluation.sample_prompts\[0\]='snow ☃'.*'☃' is not in"),
    (["data.block_size=40000"], r"data.block_size=40000 is longer than pydoc_topics's train text"),
    (["student.model.block_size=8"], r"student.model.block_size=8 is shorter than the data's windows"),
    (["data.corruption={find: qqqq, replace: zzzz}"], r"find='qqqq' matches nothing"),
    (["student=mlp"], r"student.model.name=mlp does not read token ids"),
])
def test_bad_language_model_settings_stop_before_training(tmp_path, overrides, message):
    # another student architecture: the GPT options of TEXT do not apply to it
    base = [o for o in TEXT if not (o.startswith("student.model.") and any(x.startswith("student=") for x in overrides))]
    with pytest.raises(ConfigError, match=message):
        run_in_process(tmp_path, [*base, *overrides], quick=False)
    assert not (tmp_path / "teacher_store").exists() or not any((tmp_path / "teacher_store").iterdir())


def test_metrics_json_is_strict_json(adversarial_run):
    _, out = adversarial_run
    json.loads((out / "metrics.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in metrics"))


@pytest.mark.slow  # an online teacher with hooks: about 8 s
def test_feature_kd_matches_transformer_blocks_through_a_learned_projection(tmp_path):
    """Paper 003's blocks-4/5 feature KD: a narrower student's block output projected to the teacher's width."""
    metrics, out = run_in_process(tmp_path, [
        *TEXT, "data.max_chars=12000", "teacher.max_steps=5", "student.model.n_embd=16", "student.model.n_head=2",
        "loss=feature_matching", "loss.layers=[features.blocks.1]", "loss.weight=0.5", "evaluation.sample_tokens=0",
        "logger=csv",
    ], quick=False)
    assert metrics["teacher/outputs"] == "online"  # the teacher's features are read on every step
    import csv

    with open(out / "logs" / "student" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/feature_matching/feature")]
    assert rows and all(float(row["train/feature_matching/feature"]) > 0 for row in rows)
    assert metrics["student/params"] < metrics["teacher/params"]  # half the width: a projection 16 -> 32


def test_samples_batch_prompts_by_length_and_repeat_for_the_same_seed(tmp_path):
    from types import SimpleNamespace

    from kdrun.data.tokenizers import CharTokenizer
    from kdrun.evaluation.evaluate import EvaluationOptions
    from kdrun.evaluation.text_samples import write_samples
    from kdrun.models import build_model

    tokenizer = CharTokenizer("abcdefgh ")
    source = SimpleNamespace(tokenizer=tokenizer, input_shape=(8,))
    torch.manual_seed(0)
    model = build_model({"name": "gpt", "num_classes": 9, "n_layer": 1, "n_head": 1, "n_embd": 8, "dropout": 0.0},
                        (8,), "student")
    options = EvaluationOptions.from_config({"sample_prompts": ["ab", "cd", "abc def"], "sample_tokens": 12,
                                             "sample_temperature": 1.0})
    first = write_samples(tmp_path, {"teacher": model, "student": model}, source, options, seed=3).read_text()
    again = write_samples(tmp_path, {"teacher": model, "student": model}, source, options, seed=3).read_text()
    assert first == again and first.count("=== prompt") == 3
    sections = first.split("--- ")[1:]
    assert sections[0].split("\n")[1] == sections[1].split("\n")[1]  # one model, the same draws: the same text
    assert all(len(section.split("\n")[1]) >= 12 for section in sections)
    greedy = EvaluationOptions.from_config({"sample_prompts": ["ab"], "sample_tokens": 5, "sample_temperature": 0})
    assert "ab" in write_samples(tmp_path, {"student": model}, source, greedy, seed=0).read_text()
