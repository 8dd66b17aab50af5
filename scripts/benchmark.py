"""Where kdrun's users spend time, as ratios measured in one run (medians of repeats).

    python scripts/benchmark.py [--quick] [--repeats N]

(a) student training throughput: kdrun (Lightning module + in-memory batches, online teacher)
    vs a minimal hand-written PyTorch loop doing the same work          target >= 0.9
(b) one KD epoch from cached teacher outputs vs one plain cross-entropy epoch   target <= 1.05
(c) a sweep of students sharing one teacher vs as many teacher+student runs     target <= 0.6
(d) `kdrun --cfg job` start-up, seconds                                          target <= 2
Timings on a shared machine are noisy; every ratio compares numbers taken in the same run,
with the two sides interleaved repeat by repeat.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

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

    import kdrun.cli  # noqa: F401  registers the model zoo
    from kdrun.config_tree import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=[f"paths.output_root={output_root}", *overrides])
    with open_dict(cfg):
        cfg.trainer.enable_progress_bar = False
    return cfg


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


class Setup:
    """Digits, a CNN teacher and an MLP student: the default kdrun run, built once."""

    def __init__(self, workdir: Path, epochs: int):
        import torch

        from kdrun.data.datamodule import DataSplits
        from kdrun.models import build_model
        from kdrun.schedule import build_schedule
        from kdrun.seeds import resolve_seeds

        self.cfg = compose(["loss=kd"], workdir)
        self.ce_schedule_cfg = compose(["loss=ce"], workdir)
        self.splits = DataSplits.build(self.cfg.data, resolve_seeds(self.cfg.seed, self.cfg.seeds))
        self.epochs, self.batch_size = epochs, int(self.cfg.data.batch_size)
        shape = self.splits.source.input_shape
        torch.manual_seed(0)
        self.teacher = build_model(self.cfg.teacher.model, shape, role="teacher").eval()
        self.build_student = lambda: build_model(self.cfg.student.model, shape, role="student")
        steps = self.splits.steps_per_epoch("student", self.batch_size) * epochs
        self.kd_schedule = build_schedule(self.cfg.schedule, self.cfg.loss, steps)
        self.ce_schedule = build_schedule(self.ce_schedule_cfg.schedule, self.ce_schedule_cfg.loss, steps)
        self.samples = len(self.splits.student_indices) * epochs
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def kdrun_fit(self, schedule, teacher_outputs=None) -> float:
        """Seconds for `epochs` student epochs through kdrun's module, data path and Trainer."""
        import lightning as L
        import torch

        from kdrun.data.datamodule import StageDataModule
        from kdrun.module import DistillationModule

        torch.manual_seed(1)
        module = DistillationModule(self.build_student(), self.teacher, schedule, self.cfg.student.optimizer,
                                    self.splits.num_classes, "student", teacher_outputs=teacher_outputs)
        clock = TrainingClock()
        trainer = L.Trainer(max_epochs=self.epochs, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                            limit_val_batches=0, accelerator="auto", devices=1, callbacks=[clock])
        data = StageDataModule(self.splits, "student", 7, self.batch_size, False, fast_path=True)
        trainer.fit(module, datamodule=data)
        return clock.seconds

    def hand_loop(self) -> float:
        """The same work written by hand: same tensors, order, models, loss and optimiser."""
        import torch

        from kdrun.data.in_memory import training_batches
        from kdrun.optim import build_optimizer

        torch.manual_seed(1)
        student = self.build_student().train().to(self.device)
        self.teacher.to(self.device)
        optimizer = build_optimizer(self.cfg.student.optimizer, list(student.parameters()), where="student")
        batches = training_batches(self.splits, "student", 7, self.batch_size, device=self.device)
        started = time.perf_counter()
        step = 0
        for epoch in range(self.epochs):
            batches.sampler.set_epoch(epoch)
            for x, y, index in batches:
                logits = student(x)
                with torch.inference_mode():
                    teacher_logits = self.teacher(x)
                loss, _, _ = self.kd_schedule(step, logits, teacher_logits.clone(), (x, y, index))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
        return time.perf_counter() - started


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


def startup_seconds(repeats: int) -> float:
    command = [str(Path(sys.executable).parent / "kdrun"), "--cfg", "job"]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=tempfile.gettempdir(), check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and students (about a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing (default 5, quick 3)")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    epochs, students = (2, 4) if args.quick else (4, 8)
    logging.getLogger("kdrun").setLevel(logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    startup = startup_seconds(repeats)  # first, before this process's own imports warm any cache
    print(f"machine: {machine()}")
    print(f"command: python scripts/benchmark.py{' --quick' if args.quick else ''} --repeats {repeats}")

    from kdrun.teacher_cache import compute_logits

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        setup = Setup(workdir, epochs)
        cache = compute_logits(setup.teacher, setup.splits, setup.device)
        setup.kdrun_fit(setup.kd_schedule)  # warm-up: first-call costs belong to neither side
        medians = interleaved(
            repeats,
            kdrun_online=lambda: setup.kdrun_fit(setup.kd_schedule),
            hand_loop=setup.hand_loop,
            kd_cached=lambda: setup.kdrun_fit(setup.kd_schedule, cache),
            ce_plain=lambda: setup.kdrun_fit(setup.ce_schedule),
        )
        throughput = {name: setup.samples / seconds for name, seconds in medians.items()}
        shared = sweep_seconds(workdir, students, shared=True, epochs=epochs)
        independent = sweep_seconds(workdir, students, shared=False, epochs=epochs)

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("(a) kdrun / hand-written loop, student throughput", throughput["kdrun_online"] / throughput["hand_loop"],
         ">= 0.9", f"{throughput['kdrun_online']:.0f} vs {throughput['hand_loop']:.0f} samples/s"),
        ("(b) KD epoch (cached teacher) / CE epoch", medians["kd_cached"] / medians["ce_plain"], "<= 1.05",
         f"{medians['kd_cached'] / epochs:.3f} s vs {medians['ce_plain'] / epochs:.3f} s per epoch"),
        (f"(c) {students} students, one teacher / {students} teacher+student runs", shared / independent, "<= 0.6",
         f"{shared:.1f} s vs {independent:.1f} s (one repeat each)"),
        ("(d) kdrun --cfg job start-up, s", startup, "<= 2", f"median of {repeats}"),
    ]
    print(f"digits, teacher cnn, student mlp, batch {setup.batch_size}, {epochs} epochs, median of {repeats} repeats")
    for name, value, target, detail in rows:
        print(f"{name:<58} {value:6.3f}   target {target:<7} {detail}")
    print(f"peak resident memory of the benchmark process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
