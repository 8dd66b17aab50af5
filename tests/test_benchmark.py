"""scripts/benchmark.py compares like with like: its hand-written loop does kdrun's work, its CIFAR
files are read by kdrun's CIFAR-10 source, and the whole script runs (slow job)."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Lightning's notes on the benchmark's bare Trainers (a frozen teacher in eval mode, no validation step)
pytestmark = [pytest.mark.filterwarnings("ignore:.*in eval mode at the start of training"),
              pytest.mark.filterwarnings("ignore:.*but have no `validation_step`"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")]


def load_benchmark():
    if "benchmark_script" not in sys.modules:
        spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["benchmark_script"]


def weights(model) -> dict:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_hand_written_loop_trains_the_student_kdrun_trains(tmp_path):
    """Same batches, loss and optimiser: one epoch by hand and one through kdrun end in the same weights."""
    benchmark = load_benchmark()
    setup = benchmark.Setup(tmp_path, epochs=1, overrides=["loss=kd"])
    assert setup.fast_path  # digits: the in-memory batches, on both sides
    setup.hand_loop()
    by_hand = weights(setup.last_student)
    setup.kdrun_fit(setup.kd_schedule)
    through_kdrun = weights(setup.last_student)
    setup.plain_lightning_fit()
    plain = weights(setup.last_student)
    for name, value in by_hand.items():
        assert torch.allclose(value, through_kdrun[name], atol=1e-5), name
        assert torch.allclose(value, plain[name], atol=1e-5), name
    # and the cached teacher gives the online teacher's updates
    from kdrun.teachers.cached_outputs import compute_logits

    setup.kdrun_fit(setup.kd_schedule, compute_logits(setup.teacher, setup.splits, setup.device))
    for name, value in weights(setup.last_student).items():
        assert torch.allclose(value, by_hand[name], atol=1e-4), name


@pytest.mark.slow  # two GPT fits: about 10 s
def test_language_model_workload_compares_like_with_like(tmp_path):
    """The lm workload: kdrun and the hand-written loop train the same GPT student on the same windows,
    and (a) counts tokens."""
    benchmark = load_benchmark()
    overrides = benchmark.workloads(tmp_path, quick=True)["lm"].overrides
    setup = benchmark.Setup(tmp_path, epochs=1, overrides=[*overrides, "data.max_chars=8000"])
    assert setup.splits.source.task == "next_token" and setup.unit == "tokens"
    assert setup.samples == len(setup.splits.student_indices) * 64
    setup.hand_loop()
    by_hand = weights(setup.last_student)
    setup.kdrun_fit(setup.kd_schedule)
    for name, value in weights(setup.last_student).items():
        assert torch.allclose(value, by_hand[name], atol=1e-5), name


def test_cifar_workload_files_read_as_cifar10(tmp_path):
    benchmark = load_benchmark()
    from kdrun.data.datamodule import DataSplits
    from kdrun.data.in_memory import use_fast_path
    from kdrun.config.seeds import resolve_seeds

    workload = benchmark.workloads(tmp_path, quick=True)["cifar"]
    cfg = benchmark.compose(workload.overrides, tmp_path)
    splits = DataSplits.build(cfg.data, resolve_seeds(cfg.seed, cfg.seeds))
    assert cfg.data.source == "cifar10" and splits.source.input_shape == (3, 32, 32)
    assert len(splits.source.train) + len(splits.source.val) == 640 and len(splits.source.test) == 128
    assert use_fast_path(cfg.data, splits)  # no augmentation: CIFAR batches in memory
    assert cfg.teacher.model.name == "resnet56" and cfg.student.model.name == "resnet20"


@pytest.mark.slow  # three fits on the cifar workload's images
def test_view_cache_workload_trains_the_student_the_online_teacher_trains(tmp_path):
    """(f): an epoch from a warm view cache does the online epoch's work (same views, same updates); the prefill
    loop fills exactly the rows asked for."""
    import numpy as np

    from kdrun.teachers.prefill import fill_rows
    from kdrun.teachers.view_cache import ViewCache

    benchmark = load_benchmark()
    overrides = [*benchmark.workloads(tmp_path, quick=True)["cifar"].overrides, "data.augment=cifar_standard",
                 "teacher=cnn", "teacher.model.width=0.25", "student=mlp", "student.model.width=32",
                 "data.student_size=128"]
    setup = benchmark.Setup(tmp_path, epochs=1, overrides=overrides)
    splits = setup.splits
    assert splits.views is not None and not setup.fast_path
    setup.kdrun_fit(setup.kd_schedule)
    online = weights(setup.last_student)
    cache = ViewCache.open(tmp_path / "cache", {"test": 1}, len(splits.source.train), splits.views.count,
                           splits.num_classes, torch.float32, writable=True)
    for _ in range(2):  # filling, then warm
        setup.kdrun_fit(setup.kd_schedule, view_cache=cache)
        for name, value in weights(setup.last_student).items():
            assert torch.allclose(value, online[name], atol=1e-5), name
    assert cache.counters.hits == cache.counters.computed == len(splits.student_indices)
    wanted = np.zeros((len(splits.source.train), splits.views.count), dtype=bool)
    wanted[:3, :5] = wanted[100, 161] = True
    wanted[splits.student_indices[0], 0] = True
    index, view = (torch.from_numpy(column) for column in np.nonzero(wanted))
    _, before = cache.lookup(index, view)
    written = cache.counters.written
    fill_rows(cache, setup.teacher, splits, wanted, 4, setup.device)
    _, after = cache.lookup(index, view)
    assert after.all() and cache.counters.written - written == int((~before).sum())
    values, _ = cache.lookup(torch.tensor([100]), torch.tensor([161]))
    image = splits.eval_transform(splits.views.apply(splits.source.train.dataset[100][0], 161))
    with torch.inference_mode():
        torch.testing.assert_close(values[0], setup.teacher(image[None])[0], rtol=1e-5, atol=1e-5)
    cache.close()


@pytest.mark.slow
def test_benchmark_script_prints_every_ratio(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--repeats", "1",
                             "--workload", "digits"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for label in (r"\(a\) kdrun / hand-written loop", "plain LightningModule", r"\(b\) KD epoch",
                  "written by hand", r"\(e\) image folder: decoded once", r"\(c\) 4 students", r"\(d\) kdrun --cfg job",
                  "kdrun --help"):
        line = next((line for line in result.stdout.splitlines() if re.search(label, line)), None)
        assert line is not None, (label, result.stdout)
        assert float(re.search(r"\s(\d+\.\d{3})\s", line).group(1)) > 0
    assert "peak resident memory" in result.stdout


@pytest.mark.slow  # the view-cache workload: a few minutes of ResNet-56 and ResNet-20 epochs
def test_benchmark_script_measures_the_view_cache(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--quick", "--repeats", "1",
                             "--workload", "views"], capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for label in (r"\(f\) KD epoch \(warm view cache\) / CE epoch", "warm view cache / online teacher",
                  "filling a cold cache", "kdrun-prefill, views per second", "disk, MB"):
        line = next((line for line in result.stdout.splitlines() if re.search(label, line)), None)
        assert line is not None, (label, result.stdout)
        assert float(re.search(r"\s(\d+\.\d{3})\s", line).group(1)) > 0


def test_text_workload_compares_like_with_like(tmp_path):
    """The text workload: kdrun and the hand-written loop train the same Hugging Face student on the same raw-text
    batches (each model tokenizing them itself), to the same weights."""
    pytest.importorskip("transformers")
    benchmark = load_benchmark()
    overrides = benchmark.workloads(tmp_path, quick=True)["text"].overrides
    setup = benchmark.Setup(tmp_path, epochs=1, overrides=[*overrides, "data.train_size=96", "data.val_size=16",
                                                           "data.test_size=16", "student.model.config.hidden_size=16",
                                                           "teacher.model.config.hidden_size=16"])
    assert setup.splits.source.input_kind == "text" and not setup.fast_path and setup.unit == "samples"
    setup.hand_loop()
    by_hand = weights(setup.last_student)
    setup.kdrun_fit(setup.kd_schedule)
    for name, value in weights(setup.last_student).items():
        assert torch.allclose(value, by_hand[name], atol=1e-5), name


# (g) packed sweeps: the same sweeps under hydra/launcher=packed and the basic launcher; no speed target here
@pytest.mark.slow  # four warm-up runs and sweeps of 8 digits and 4 CIFAR students: a few minutes on 2 CPU cores
@pytest.mark.timeout(1500)
def test_packed_measurement_prints_finite_positive_ratios(tmp_path, capsys):
    benchmark = load_benchmark()
    cifar = benchmark.workloads(tmp_path, quick=True)["cifar"]
    rows = benchmark.measure_packed(cifar, tmp_path, quick=True, repeats=1)
    benchmark.print_rows(rows)
    printed = capsys.readouterr().out
    targets = {r"\(g\) digits: packed / one-by-one, student throughput": "target >= 4",
               "digits: one-by-one / packed, sweep wall time": "report",
               "cifar: packed / one-by-one, student throughput": "report",
               "cifar: one-by-one / packed, sweep wall time": "report"}
    for label, target in targets.items():
        row = next((row for row in rows if re.search(label, row[0])), None)
        assert row is not None, (label, rows)
        assert math.isfinite(row[1]) and row[1] > 0, row
        line = next((line for line in printed.splitlines() if re.search(label, line)), None)
        assert line is not None, (label, printed)
        assert float(re.search(r"\s(\d+\.\d{3})\s", line).group(1)) > 0 and target in line, line
    # the digits sweep's 8 students trained as one pack, to the one-by-one students' test accuracy
    digits = next(row for row in rows if row[0].startswith("(g) digits"))
    assert "packs of 8;" in digits[3], digits
    assert float(re.search(r"test acc max \|diff\| (\S+)", digits[3]).group(1)) < 0.02, digits
