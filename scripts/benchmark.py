"""Where kdrun's users spend time, as ratios measured in one run (medians of repeats).

    python scripts/benchmark.py [--quick] [--repeats N] [--workload digits|cifar|lm|text|views|packed|all]

Per workload:
(a) student training throughput: kdrun (its Lightning module, data path and Trainer, online teacher)
    vs a minimal hand-written PyTorch loop doing the same work                  target >= 0.9
    also shown: a plain LightningModule doing the same work vs the same loop (Lightning's own floor)
(b) one KD epoch from cached teacher outputs vs one plain cross-entropy epoch   target <= 1.05
Once (on digits):
(c) a sweep of students sharing one teacher vs as many teacher+student runs     target <= 0.6
(d) `kdrun --cfg job` (and `kdrun --help`) start-up, seconds                     target <= 2
(e) a folder of grayscale PNGs (MNIST-sized, 5,000; --quick 1,000), CE student epochs: decoded once
    (data.decode_cache: the in-memory path of digits and MNIST) vs decoded from the files every epoch
                                                                               target <= 0.5
(f) `views` (with --workload all or views): the cifar workload under data.augment=cifar_standard, a KD epoch
    whose teacher outputs come from a warm view cache vs a CE epoch             target <= 1.05
    also shown: the warm view cache vs the online teacher; an epoch that fills a cold cache (the students'
    lazy fill) vs the online teacher; kdrun-prefill's rate in views per second and the time a whole table
    would take here; the table's disk size, for these images and for CIFAR-10 / CIFAR-100's 50,000
(g) `packed` (with --workload all or packed): 8 default-run students (digits, `seed=0,1,2,3 loss=ce,kd`; --quick:
    fewer epochs) swept by `kdrun -m hydra/launcher=packed` vs by the basic launcher, one by one, both sharing one
    teacher trained beforehand; student-training throughput (student steps summed over the jobs / student-training
    seconds: each job's `student/wall_time_s`, a pack's counted once), packed / one by one   target >= 4
    also shown (report, no target): the whole sweep's wall time (each `kdrun -m` command), one by one / packed;
    the same two ratios for the cifar workload's ResNet-20 students (8; --quick 4, a few steps each); with a
    CUDA GPU, the packed digits sweep's students per second and its peak GPU memory

Workloads: `digits` is the default run (CNN teacher, MLP student, batch 64): a student step takes a
few milliseconds, so fixed per-step costs show. `cifar` is the papers' usual setting in CIFAR-10's
on-disk format (random images written to a temporary folder, read by torchvision's loader): ResNet-56
teacher, ResNet-20 student, batch 64, where the models' arithmetic dominates as it does in research runs.
`lm` is character-level language-model distillation on the embedded corpus (64-token windows, micro-GPT
teacher and student, batch 64): (a) counts tokens per second, (b) is KD from cached per-token teacher
logits against CE, and the hand-written loop flattens the positions as any language-model loop does.
`text` is text classification on the embedded sentiment task with Hugging Face models (bert_tiny teacher and
student, batch 32): batches carry raw text, which each model tokenizes itself, in kdrun and in the loop alike.
Timings on a shared machine are noisy; every ratio compares numbers taken in the same run,
with the two sides interleaved repeat by repeat.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (f"{platform.platform()} | {os.cpu_count()} CPUs (load avg {load}) | python {platform.python_version()} "
            f"| torch {torch.__version__} ({torch.get_num_threads()} threads) | GPU {gpu}")


def compose(overrides: list[str], output_root: Path):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import open_dict

    from kdrun.config.roles import register_role_groups

    register_role_groups()
    from kdrun.config.tree import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[f"paths.output_root={output_root}", *overrides])
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


def write_cifar10(root: Path, train: int, test: int) -> Path:
    """Random images in CIFAR-10's on-disk layout (pickled dicts of uint8 rows, five training
    batches, a test batch and the metadata), which torchvision's CIFAR10 reads like the real files."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def batch(path: Path, count: int) -> None:
        rows = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
        with open(path, "wb") as handle:
            pickle.dump({"data": rows, "labels": rng.integers(0, 10, size=count).tolist()}, handle)

    for number in range(1, 6):
        batch(folder / f"data_batch_{number}", train // 5)
    batch(folder / "test_batch", test)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class_{c}" for c in range(10)]}, handle)
    return root


@dataclass
class Workload:
    name: str
    description: str
    overrides: list[str]


def workloads(workdir: Path, quick: bool) -> dict[str, Workload]:
    images = 640 if quick else 1280  # training pool; 10% of it is held out for validation
    return {
        "digits": Workload("digits", "the default run: digits, teacher cnn, student mlp, batch 64", ["loss=kd"]),
        "cifar": Workload(
            "cifar", f"CIFAR-10 format ({images} random images), teacher resnet56, student resnet20, batch 64",
            ["loss=kd", "data=cifar10", f"data.root={write_cifar10(workdir / 'cifar', images, 128)}",
             "data.verify_checksums=false", "data.augment=none", "teacher=resnet56", "student=resnet20"]),
        "lm": Workload(
            "lm", "embedded text, 64-token windows, teacher and student micro_gpt, batch 64",
            ["loss=kd", "data=pydoc_topics", f"data.max_chars={60000 if quick else 120000}", "data.block_size=64",
             "teacher=micro_gpt", "student=micro_gpt"]),
        "text": Workload(
            "text", "embedded sentiment task, teacher and student bert_tiny (Hugging Face), batch 32",
            ["loss=kd", "data=toy_sentiment", f"data.train_size={1200 if quick else 3000}", "teacher=bert_tiny",
             "student=bert_tiny"]),
    }


def TrainingClock():
    """Seconds from the first to the end of the last training step: the Trainer's one-off set-up
    (about a second, once per stage) is left out, as it is of the hand-written loop."""
    from lightning.pytorch.callbacks import Callback

    class Clock(Callback):
        def on_train_start(self, trainer, pl_module):
            self.started = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.seconds = time.perf_counter() - self.started

    return Clock()


def PlainModule(student, teacher, schedule, optimizer_cfg):
    """The same work as a textbook LightningModule: no metrics, no logging, no checks."""
    import lightning as L
    import torch

    from kdrun.engine.recipes import build_optimizer
    from kdrun.losses.positions import per_position

    class Plain(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.student, self.teacher = student, teacher.eval()

        def training_step(self, batch, batch_idx):
            x, y, index = batch
            logits = self.student(x)
            with torch.inference_mode():
                teacher_logits = self.teacher(x)
            loss, _, _ = schedule(self.global_step, *per_position(logits, teacher_logits.clone(), batch))
            return loss

        def configure_optimizers(self):
            return build_optimizer(optimizer_cfg, list(self.student.parameters()), where="student")

    return Plain()


class Setup:
    """A workload's data, teacher (untrained: timing does not depend on its weights) and student, built once."""

    def __init__(self, workdir: Path, epochs: int, overrides: list[str]):
        import torch

        from kdrun.data.datamodule import DataSplits
        from kdrun.data.in_memory import use_fast_path
        from kdrun.models import build_model
        from kdrun.engine.loss_schedule import build_schedule
        from kdrun.config.seeds import resolve_seeds

        self.cfg = compose(overrides, workdir)
        self.ce_schedule_cfg = compose([*overrides, "loss=ce"], workdir)
        self.splits = DataSplits.build(self.cfg.data, resolve_seeds(self.cfg.seed, self.cfg.seeds))
        self.fast_path = use_fast_path(self.cfg.data, self.splits)  # what a kdrun run would choose
        self.epochs, self.batch_size = epochs, int(self.cfg.data.batch_size)
        shape = self.splits.source.input_shape
        torch.manual_seed(0)
        self.teacher = build_model(self.cfg.teacher.model, shape, role="teacher").eval()
        self.build_student = lambda: build_model(self.cfg.student.model, shape, role="student")
        steps = self.splits.steps_per_epoch("student", self.batch_size) * epochs
        self.kd_schedule = build_schedule(self.cfg.schedule, self.cfg.loss, steps)
        self.ce_schedule = build_schedule(self.ce_schedule_cfg.schedule, self.ce_schedule_cfg.loss, steps)
        # what (a) counts: samples, or the token positions of a language model's windows
        positions = shape[0] if self.splits.source.task == "next_token" else 1
        self.samples = len(self.splits.student_indices) * epochs * positions
        self.unit = "tokens" if positions > 1 else "samples"
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def data(self):
        from kdrun.data.datamodule import StageDataModule

        return StageDataModule(self.splits, "student", 7, self.batch_size, False, fast_path=self.fast_path)

    def _fit(self, module) -> float:
        import lightning as L

        clock = TrainingClock()
        trainer = L.Trainer(max_epochs=self.epochs, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, accelerator="auto", devices=1, callbacks=[clock])
        trainer.fit(module, datamodule=self.data())
        self.last_student = module.student
        return clock.seconds

    def kdrun_fit(self, schedule, teacher_outputs=None, view_cache=None) -> float:
        """Seconds for `epochs` student epochs through kdrun's module, data path and Trainer; `view_cache`: the
        teacher's outputs per view (the loader's views are the stream of order seed 7, as data() draws them)."""
        import torch

        from kdrun.engine.module import DistillationModule

        torch.manual_seed(1)
        views = {} if view_cache is None else {"view_cache": view_cache, "view_stream": self.splits.view_stream(7)}
        return self._fit(DistillationModule(self.build_student(), self.teacher, schedule, self.cfg.student.optimizer,
                                            self.splits.num_classes, "student", teacher_outputs=teacher_outputs,
                                            **views))

    def plain_lightning_fit(self) -> float:
        import torch

        torch.manual_seed(1)
        return self._fit(PlainModule(self.build_student(), self.teacher, self.kd_schedule, self.cfg.student.optimizer))

    def hand_loop(self, schedule=None, teacher_outputs=None) -> float:
        """The same work written by hand: same batches, order, models, loss and optimiser; the teacher
        online, or its logits looked up by sample index from `teacher_outputs`."""
        import torch

        from kdrun.data.batches import to_device
        from kdrun.engine.recipes import build_optimizer
        from kdrun.losses.positions import per_position

        schedule = schedule or self.kd_schedule
        torch.manual_seed(1)
        student = self.build_student().train().to(self.device)
        self.teacher.to(self.device)
        optimizer = build_optimizer(self.cfg.student.optimizer, list(student.parameters()), where="student")
        batches = self.data().train_dataloader()
        # on the device the batch indices live on, as kdrun's module holds its cached logits
        cached_train = None if teacher_outputs is None else teacher_outputs["train"].to(self.device)
        started = time.perf_counter()
        step = 0
        for epoch in range(self.epochs):
            batches.sampler.set_epoch(epoch)
            for x, y, index in batches:
                x, y, index = to_device(x, self.device), y.to(self.device), index.to(self.device)
                logits = student(x)
                teacher_logits = None
                if schedule.teacher_needed_at(step):
                    if cached_train is not None:
                        teacher_logits = cached_train[index]
                    else:
                        with torch.inference_mode():
                            teacher_logits = self.teacher(x).clone()
                loss, _, _ = schedule(step, *per_position(logits, teacher_logits, (x, y, index)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
        seconds = time.perf_counter() - started
        self.last_student = student
        return seconds


def interleaved(repeats: int, **runs) -> dict[str, float]:
    """Median seconds of each run, the runs alternating within every repeat (shared load hits all)."""
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


def sweep_seconds(workdir: Path, students: int, shared: bool, epochs: int) -> float:
    """Wall time of `students` in-process kdrun runs (seeds 0..n-1), with one teacher store or one each."""
    from kdrun.pipeline import run

    started = time.perf_counter()
    for seed in range(students):
        store = workdir / ("store" if shared else f"store_{seed}")
        cfg = compose([f"seed={seed}", f"teacher.epochs={epochs}", f"student.epochs={epochs}", "logger=none",
                       f"teacher.store={store}"], workdir)
        run(cfg, workdir / ("shared" if shared else "independent") / str(seed))
    return time.perf_counter() - started


def startup_seconds(repeats: int, *args: str) -> float:
    command = [str(Path(sys.executable).parent / "kdrun"), *args]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=tempfile.gettempdir(), check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_workload(workload: Workload, workdir: Path, epochs: int, repeats: int) -> list[tuple]:
    from kdrun.teachers.cached_outputs import compute_logits

    setup = Setup(workdir, epochs, workload.overrides)
    cache = compute_logits(setup.teacher, setup.splits, setup.device)
    setup.kdrun_fit(setup.kd_schedule)  # warm-up: first-call costs belong to neither side
    medians = interleaved(
        repeats,
        kdrun_online=lambda: setup.kdrun_fit(setup.kd_schedule),
        hand_loop=setup.hand_loop,
        plain_lightning=setup.plain_lightning_fit,
        kd_cached=lambda: setup.kdrun_fit(setup.kd_schedule, cache),
        ce_plain=lambda: setup.kdrun_fit(setup.ce_schedule),
        hand_kd_cached=lambda: setup.hand_loop(setup.kd_schedule, cache),
        hand_ce=lambda: setup.hand_loop(setup.ce_schedule),
    )
    throughput = {name: setup.samples / seconds for name, seconds in medians.items()}
    step_ms = 1000 * medians["hand_loop"] / (setup.splits.steps_per_epoch("student", setup.batch_size) * epochs)
    path = "in-memory batches" if setup.fast_path else "DataLoader"
    print(f"\n{workload.name}: {workload.description}; {path}; {epochs} epochs of "
          f"{len(setup.splits.student_indices)} samples; a hand-written step takes {step_ms:.1f} ms")
    return [
        ("(a) kdrun / hand-written loop, student throughput", throughput["kdrun_online"] / throughput["hand_loop"],
         ">= 0.9", f"{throughput['kdrun_online']:.0f} vs {throughput['hand_loop']:.0f} {setup.unit}/s"),
        ("    plain LightningModule / hand-written loop", throughput["plain_lightning"] / throughput["hand_loop"],
         "", f"{throughput['plain_lightning']:.0f} {setup.unit}/s: Lightning's own per-step cost"),
        ("    KD from cached teacher / online teacher, kdrun", throughput["kd_cached"] / throughput["kdrun_online"],
         "", f"{throughput['kd_cached']:.0f} vs {throughput['kdrun_online']:.0f} {setup.unit}/s"),
        ("(b) KD epoch (cached teacher) / CE epoch", medians["kd_cached"] / medians["ce_plain"], "<= 1.05",
         f"{medians['kd_cached'] / epochs:.3f} s vs {medians['ce_plain'] / epochs:.3f} s per epoch"),
        ("    the same two epochs written by hand", medians["hand_kd_cached"] / medians["hand_ce"], "",
         f"{medians['hand_kd_cached'] / epochs:.3f} s vs {medians['hand_ce'] / epochs:.3f} s: the KD loss's own cost"),
    ]


def write_png_folder(root: Path, train: int, test: int) -> Path:
    """<root>/{train,test}/<class>/*.png: 28x28 grayscale images of 10 classes, as MNIST exported to PNG."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for index in range(count):
            folder = root / split / str(index % 10)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(28, 28), dtype=np.uint8), mode="L").save(folder / f"{index}.png")
    return root


def measure_image_folder(workdir: Path, quick: bool, epochs: int, repeats: int) -> list[tuple]:
    images = 1000 if quick else 5000
    root = write_png_folder(workdir / "pngs", images, images // 5)
    folder = ["data=image_folder", f"data.root={root}", "data.num_classes=10", "data.image_size=28",
              "loss=ce", "teacher=mlp", "student=mlp"]
    started = time.perf_counter()
    decoded = Setup(workdir, epochs, [*folder, "data.decode_cache=true"])
    decode_seconds = time.perf_counter() - started
    on_files = Setup(workdir, epochs, [*folder, "data.decode_cache=false"])
    for setup in (decoded, on_files):
        setup.kdrun_fit(setup.ce_schedule)  # warm-up
    medians = interleaved(repeats, decoded=lambda: decoded.kdrun_fit(decoded.ce_schedule),
                          on_files=lambda: on_files.kdrun_fit(on_files.ce_schedule))
    print(f"\nimage folder: {images:,} 28x28 grayscale PNGs (+{images // 5:,} test), CE, mlp student, {epochs} "
          f"epochs; decoded once: {'in-memory batches' if decoded.fast_path else 'DataLoader'} (decoding and the "
          f"statistics took {decode_seconds:.1f} s), from files: {'in-memory' if on_files.fast_path else 'DataLoader'}")
    return [
        ("(e) image folder: decoded once / decoded every epoch", medians["decoded"] / medians["on_files"], "<= 0.5",
         f"{medians['decoded'] / epochs:.3f} s vs {medians['on_files'] / epochs:.3f} s per epoch"),
    ]


def measure_view_cache(workload: Workload, workdir: Path, epochs: int, repeats: int) -> list[tuple]:
    """(f): the cifar workload under cifar_standard augmentation, the teacher's outputs from the view cache."""
    import torch

    from omegaconf import OmegaConf

    from kdrun.config.tree import config_dir
    from kdrun.teachers.cached_outputs import cache_dtype
    from kdrun.teachers.prefill import disk_megabytes, fill_rows
    from kdrun.teachers.view_cache import ViewCache, megabytes

    setup = Setup(workdir, epochs, [*workload.overrides, "data.augment=cifar_standard"])
    splits, dtype = setup.splits, cache_dtype(setup.cfg)
    samples, views, classes = len(splits.source.train), splits.views.count, splits.num_classes
    folder, opened = workdir / "view_caches", []

    def fresh_cache() -> ViewCache:
        cache = ViewCache.open(folder / str(len(opened)), {"benchmark": len(opened)}, samples, views, classes, dtype,
                               writable=True)
        opened.append(cache)
        return cache

    warm = fresh_cache()
    setup.kdrun_fit(setup.kd_schedule, view_cache=warm)  # warm-up: fills the rows of the epochs' views
    # the target's two sides alternate with nothing between them (the online teacher's large activations, run
    # between them, disturb the next epoch's timing on a CPU); then the teacher-running epochs
    medians = interleaved(
        repeats,
        kd_warm=lambda: setup.kdrun_fit(setup.kd_schedule, view_cache=warm),
        ce=lambda: setup.kdrun_fit(setup.ce_schedule),
    )
    medians.update(interleaved(
        repeats,
        kd_online=lambda: setup.kdrun_fit(setup.kd_schedule),
        kd_cold=lambda: setup.kdrun_fit(setup.kd_schedule, view_cache=fresh_cache()),
    ))
    # kdrun-prefill's loop on every view of a block of samples, into an empty table
    wanted = np.zeros((samples, views), dtype=bool)
    wanted[:64] = True
    prefill_cache = fresh_cache()
    started = time.perf_counter()
    batch_size = int(OmegaConf.load(config_dir() / "prefill.yaml").prefill.batch_size)  # kdrun-prefill's default
    fill_rows(prefill_cache, setup.teacher, splits, wanted, batch_size, setup.device)
    rate = wanted.sum() / (time.perf_counter() - started)
    filled_mb = disk_megabytes(warm.folder)
    for cache in opened:
        cache.close()
    epoch = len(splits.student_indices)
    print(f"\nviews: the cifar workload with data.augment=cifar_standard ({views} views per image), ResNet-56 -> "
          f"ResNet-20, {epochs} epochs of {epoch} samples per timing, DataLoader; view cache in "
          f"{str(dtype).replace('torch.', '')}")
    return [
        ("(f) KD epoch (warm view cache) / CE epoch, augmented", medians["kd_warm"] / medians["ce"], "<= 1.05",
         f"{medians['kd_warm'] / epochs:.2f} s vs {medians['ce'] / epochs:.2f} s per epoch"),
        ("    KD epoch: warm view cache / online teacher", medians["kd_warm"] / medians["kd_online"], "",
         f"{medians['kd_warm'] / epochs:.2f} s vs {medians['kd_online'] / epochs:.2f} s"),
        ("    KD epochs filling a cold cache / online teacher", medians["kd_cold"] / medians["kd_online"], "",
         f"{medians['kd_cold'] / epochs:.2f} s per epoch: the teacher on every view met, plus the writes"),
        ("    kdrun-prefill, views per second", rate, "",
         f"a whole table of {samples} images x {views} views: {samples * views / rate:.0f} s here"),
        ("    disk, MB: the epochs' rows (allocated)", filled_mb, "",
         f"whole table {megabytes(samples, views, classes, dtype):.0f} MB; 50,000 images: "
         f"{megabytes(50000, views, 10, dtype) / 1024:.2f} GiB (10 classes), "
         f"{megabytes(50000, views, 100, torch.float16) / 1024:.2f} GiB (100 classes, float16)"),
    ]


# (g): the packed launcher. The `kdrun` entry point's own lines, plus the process's peak GPU memory (the packed
# launcher trains every pack in the `kdrun -m` process) written to the file named by the first argument at exit
GPU_PEAK_MAIN = """import atexit, sys, torch
from kdrun.cli import main
peak_file = sys.argv.pop(1)
atexit.register(lambda: open(peak_file, "w").write(str(torch.cuda.max_memory_allocated())))
sys.argv[0] = "kdrun"
sys.exit(main())
"""


@dataclass
class SweepResult:
    """One `kdrun -m` sweep, read from its jobs' metrics.json."""

    wall: float  # the command's wall clock, seconds
    steps: int  # student steps, summed over the jobs
    training: float  # student-training seconds: each lone job's `student/wall_time_s`, each pack's once
    packs: list  # the packs' sizes
    alone: int  # jobs whose student trained by itself
    accuracy: list  # each job's student/test/acc, in job order
    reasons: list  # why the packed launcher ran jobs alone, as its log says


def kdrun_sweep(sweep_dir: Path, overrides: list[str], jobs: int, packed: bool, cwd: Path,
                python_code: str | None = None, *code_args: str) -> SweepResult:
    """Run `kdrun -m [hydra/launcher=packed] hydra.sweep.dir=<sweep_dir> <overrides>` and read its `jobs` jobs'
    metrics; `python_code`: run by the venv's python in place of the `kdrun` entry point, with `code_args` first."""
    launcher = ["hydra/launcher=packed"] if packed else []
    arguments = ["-m", *launcher, f"hydra.sweep.dir={sweep_dir}", *overrides]
    program = ([sys.executable, "-c", python_code, *code_args] if python_code
               else [str(Path(sys.executable).parent / "kdrun")])
    started = time.perf_counter()
    result = subprocess.run([*program, *arguments], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    shown = " ".join(["kdrun", *arguments])
    if result.returncode != 0:
        raise RuntimeError(f"`{shown}` failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    metrics = []
    for number in range(jobs):
        path = sweep_dir / str(number) / "metrics.json"
        if not path.exists():
            raise RuntimeError(f"`{shown}` wrote no {path}:\n{result.stderr[-4000:]}")
        metrics.append(json.loads(path.read_text()))
    training, alone, packs = 0.0, 0, {}  # pack id -> (its size, its seconds, the members seen)
    for job in metrics:
        pack = job.get("pack/id")
        if pack is None:
            training += job["student/wall_time_s"]
            alone += 1
            continue
        if pack not in packs:  # the pack's time, once: its members trained at once
            packs[pack] = (job["pack/size"], job["student/wall_time_s"], [])
            training += job["student/wall_time_s"]
        size, seconds, seen = packs[pack]
        if job["student/wall_time_s"] != seconds or job["pack/size"] != size:
            raise RuntimeError(f"`{shown}`: the members of pack {pack} report different student/wall_time_s or "
                               f"pack/size")
        seen.append(job)
    for pack, (size, _, seen) in packs.items():
        if len(seen) != size:
            raise RuntimeError(f"`{shown}`: pack {pack} has pack/size {size} but {len(seen)} of the jobs name it")
    if not packed and packs:
        raise RuntimeError(f"`{shown}`: the basic launcher's jobs report packs")
    shutil.rmtree(sweep_dir)  # the outputs of many sweeps add up
    reasons = sorted({line.split("runs alone: ", 1)[1].strip() for line in (result.stdout + result.stderr).splitlines()
                      if "runs alone: " in line})
    return SweepResult(wall, sum(int(job["student/steps"]) for job in metrics), training,
                       [size for size, _, _ in packs.values()], alone,
                       [job.get("student/test/acc") for job in metrics], reasons)


def compare_sweeps(name: str, workdir: Path, overrides: list[str], sweep: list[str], jobs: int, warm_up: list[str],
                   repeats: int) -> dict:
    """The sweep `sweep` (over `jobs` jobs) under the packed and the basic launcher, interleaved; the teacher is
    trained first by one run of `warm_up`, and reused by every job through the shared teacher store."""
    root = workdir / "packed" / name
    root.mkdir(parents=True, exist_ok=True)
    common = [f"paths.output_root={root / 'out'}", "trainer.enable_progress_bar=false", *overrides]
    warm = subprocess.run([str(Path(sys.executable).parent / "kdrun"), f"hydra.run.dir={root / 'warm-up'}",
                           *common, *warm_up], cwd=root, capture_output=True, text=True)
    if warm.returncode != 0:
        raise RuntimeError(f"the warm-up run of {name} failed:\n{warm.stderr[-4000:]}")
    results = {"packed": [], "basic": []}

    def side(packed: bool):
        def run() -> float:
            label = "packed" if packed else "basic"
            result = kdrun_sweep(root / f"{label}_{len(results[label])}", [*common, *sweep], jobs, packed, root)
            results[label].append(result)
            return result.wall
        return run

    walls = interleaved(repeats, packed=side(True), basic=side(False))
    training = {label: statistics.median(result.training for result in runs) for label, runs in results.items()}
    steps = {label: runs[0].steps for label, runs in results.items()}
    if steps["packed"] != steps["basic"]:
        raise RuntimeError(f"{name}: the packed sweep's jobs took {steps['packed']} student steps, the basic "
                           f"launcher's {steps['basic']}")
    packed, basic = results["packed"][-1], results["basic"][-1]
    differences = [abs(a - b) for a, b in zip(packed.accuracy, basic.accuracy) if a is not None and b is not None]
    return {"wall": walls, "training": training, "steps": steps["packed"],
            "throughput": {label: steps[label] / training[label] for label in training},
            "packs": packed.packs, "alone": packed.alone, "reasons": packed.reasons, "jobs": jobs,
            "accuracy_gap": max(differences, default=float("nan"))}


def describe_packs(comparison: dict) -> str:
    packs = ", ".join(str(size) for size in comparison["packs"]) or "none"
    alone = f", {comparison['alone']} alone" if comparison["alone"] else ""
    return f"packs of {packs}{alone}"


def measure_packed(cifar: Workload, workdir: Path, quick: bool, repeats: int) -> list[tuple]:
    """(g): sweeps of students trained as packs (hydra/launcher=packed) vs one by one (the basic launcher)."""
    import torch

    epochs = 2 if quick else 5
    digits_overrides = [f"teacher.epochs={epochs}", f"student.epochs={epochs}"]
    digits = compare_sweeps("digits", workdir, digits_overrides, ["seed=0,1,2,3", "loss=ce,kd"], 8,
                            ["seed=0", "loss=kd"], repeats)
    seeds = "0,1" if quick else "0,1,2,3"
    students = 2 * len(seeds.split(","))
    # the cifar workload's data and models, every loss of the sweep; tiny budgets: ResNets on a CPU are slow
    cifar_overrides = [override for override in cifar.overrides if not override.startswith("loss=")]
    budget = ["teacher.max_steps=4", "student.max_steps=4"] if quick else ["teacher.epochs=1", "student.epochs=1"]
    cifar_run = compare_sweeps("cifar", workdir, [*cifar_overrides, *budget], [f"seed={seeds}", "loss=ce,kd"],
                               students, ["seed=0", "loss=kd"], repeats)
    print(f"\npacked: `kdrun -m hydra/launcher=packed` vs the basic launcher (one by one), the same sweep; "
          f"digits: the default run, {epochs} teacher and student epochs, `seed=0,1,2,3 loss=ce,kd`; cifar: "
          f"{cifar.description}, {' '.join(budget)}, `seed={seeds} loss=ce,kd`; one teacher trained beforehand")
    rows = []
    for label, comparison, target in (("digits", digits, ">= 4"), ("cifar", cifar_run, "report")):
        if comparison["alone"]:  # then the ratio is not the packs' alone
            print(f"warning: {label}: {comparison['alone']} of {comparison['jobs']} jobs trained alone under "
                  f"hydra/launcher=packed: {'; '.join(comparison['reasons']) or 'the log gives no reason'}")
        rate, wall = comparison["throughput"], comparison["wall"]
        rows += [
            (f"{'(g)' if label == 'digits' else '   '} {label}: packed / one-by-one, student throughput",
             rate["packed"] / rate["basic"], target,
             f"{rate['packed']:.1f} vs {rate['basic']:.1f} steps/s ({comparison['steps']} steps; "
             f"{comparison['training']['packed']:.1f} s vs {comparison['training']['basic']:.1f} s); "
             f"{describe_packs(comparison)}; test acc max |diff| {comparison['accuracy_gap']:.4f}"),
            (f"    {label}: one-by-one / packed, sweep wall time", wall["basic"] / wall["packed"], "report",
             f"{wall['basic']:.1f} s vs {wall['packed']:.1f} s per `kdrun -m`"),
        ]
    if torch.cuda.is_available():
        peak_file = workdir / "packed" / "gpu_peak"
        common = [f"paths.output_root={workdir / 'packed' / 'digits' / 'out'}", "trainer.enable_progress_bar=false",
                  *digits_overrides, "seed=0,1,2,3", "loss=ce,kd"]
        kdrun_sweep(workdir / "packed" / "gpu", common, 8, True, workdir, GPU_PEAK_MAIN, str(peak_file))
        peak_mib = int(peak_file.read_text()) / 2 ** 20
        rows += [
            ("    digits packed sweep on the GPU, students per second", 8 / digits["training"]["packed"], "",
             f"8 students in {digits['training']['packed']:.1f} s of student training"),
            ("    digits packed sweep on the GPU, peak memory, MiB", peak_mib, "",
             "torch.cuda.max_memory_allocated of the `kdrun -m` process (another packed sweep)"),
        ]
    return rows


def print_rows(rows) -> None:
    for name, value, target, detail in rows:
        shown = target if target in ("", "report") else "target " + target  # report: a number without a target
        print(f"{name:<58} {value:6.3f}   {shown:<14} {detail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs, images and students")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing (default 5, quick 3)")
    parser.add_argument("--workload", choices=("digits", "cifar", "lm", "text", "views", "packed", "all"),
                        default="all", help="which workload's (a) and (b), the view cache's (f) or the packed "
                                            "sweeps' (g) to measure (default all)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    epochs, students = (2, 4) if args.quick else (4, 8)  # of the kdrun runs in (c)
    # epochs per timed fit: digits epochs take ~0.05 s, so several make each timing long enough to be stable
    fit_epochs = {"digits": 4 if args.quick else 12, "cifar": 1, "lm": 1, "text": 1}
    logging.getLogger("kdrun").setLevel(logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    # first, before this process's own imports warm any cache
    startup, help_startup = startup_seconds(repeats, "--cfg", "job"), startup_seconds(repeats, "--help")
    print(f"machine: {machine()}")
    print(f"command: python scripts/benchmark.py{' --quick' if args.quick else ''} --repeats {repeats} "
          f"--workload {args.workload}")

    chosen = ("digits", "cifar", "lm", "text", "views", "packed") if args.workload == "all" else (args.workload,)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        available = workloads(workdir, args.quick)
        for name in chosen:
            if name == "views":
                print_rows(measure_view_cache(available["cifar"], workdir, 2, repeats))
                continue
            if name == "packed":
                print_rows(measure_packed(available["cifar"], workdir, args.quick, repeats))
                continue
            print_rows(measure_workload(available[name], workdir, fit_epochs[name], repeats))
        if args.workload in ("views", "packed"):
            return
        print_rows(measure_image_folder(workdir, args.quick, 1 if args.quick else 2, repeats))
        sweep_seconds(workdir / "warm-up", 1, shared=False, epochs=epochs)  # first-run costs: neither side's
        shared = sweep_seconds(workdir, students, shared=True, epochs=epochs)
        independent = sweep_seconds(workdir, students, shared=False, epochs=epochs)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nkdrun runs of the default config (digits), {epochs} teacher and {epochs} student epochs each")
    print_rows([
        (f"(c) {students} students, one teacher / {students} teacher+student runs", shared / independent, "<= 0.6",
         f"{shared:.1f} s vs {independent:.1f} s (one repeat each)"),
        ("(d) kdrun --cfg job start-up, s", startup, "<= 2", f"median of {repeats}"),
        ("    kdrun --help, s", help_startup, "<= 2", f"median of {repeats}"),
    ])
    print(f"peak resident memory of the benchmark process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
