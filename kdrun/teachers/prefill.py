"""The `kdrun-prefill` command: fill a teacher's view cache (kdrun.teachers.view_cache) ahead of a sweep.

Students fill the cache lazily, so the first students of a sweep still pay for the teacher's passes on the
views they meet first, and concurrent first students compute the same rows twice. A prefill computes the
rows once, in large batches, before the sweep starts. It takes every `kdrun` override, so
`kdrun-prefill data=cifar100 teacher=resnet56` finds (or trains once) the stored teacher that
`kdrun data=cifar100 teacher=resnet56 student=resnet20 -m seed=0,1,2` uses, and fills the cache those
students read. Which rows:

- `prefill.views=all`: every view of every training sample of the students (the whole table for kappa = 1);
- `prefill.views=drawn`: only the views the students draw over their epochs, for the seeds `prefill.seeds`
  (default: the configuration's `seed`): fewer rows when a sweep has fewer students than views per sample.

Rows already present and intact are skipped, so an interrupted prefill continues where it stopped, and it
may run beside students that fill the same cache (the cache's locks keep every row whole).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from kdrun.atomic_files import write_json
from kdrun.config.checks import check_choice, check_list, check_seed, check_whole_number
from kdrun.config.roles import register_role_groups
from kdrun.config.tree import config_dir
from kdrun.errors import ConfigError

log = logging.getLogger("kdrun")

VIEW_MODES = ("all", "drawn")


def check_prefill_config(options) -> None:
    """Reject bad `prefill` values before any data is loaded or teacher trained."""
    check_whole_number(options.get("batch_size"), "prefill.batch_size", minimum=1,
                       meaning="views per teacher forward pass")
    check_choice(options.get("views", "all"), "prefill.views", VIEW_MODES,
                 meaning="all: every view of each sample; drawn: the views the students of prefill.seeds draw")
    seeds = options.get("seeds")
    if seeds is not None:
        for position, seed in enumerate(check_list(seeds, "prefill.seeds", meaning="master seeds of the students")):
            check_seed(seed, f"prefill.seeds[{position}]", meaning="a student's master seed (seed=)")
        if not len(seeds):
            raise ConfigError("prefill.seeds=[] names no student; allowed: null (the configuration's seed) or "
                              "a list of seeds")


def wanted_rows(cfg, splits, seeds: list[int], mode: str) -> np.ndarray:
    """(training pool samples, views) True where the students of `seeds` would read the row."""
    from kdrun.config.seeds import resolve_seeds
    from kdrun.engine.recipes import stage_budget

    wanted = np.zeros((len(splits.source.train), splits.views.count), dtype=bool)
    budget = stage_budget(cfg.student, splits, "student")
    epochs = math.ceil(budget.total_steps / budget.steps_per_epoch)
    for seed in seeds:
        seeds_of_student = resolve_seeds(seed, cfg.get("seeds"))
        _, samples = splits.partition(cfg.data, splits.source, seeds_of_student)  # the seed's kappa subset
        if mode == "all":
            wanted[samples] = True
            continue
        stream = splits.view_stream(seeds_of_student.data_order)
        for epoch in range(epochs):
            wanted[samples, stream.table(epoch).numpy()[samples]] = True
    return wanted


def prefill(cfg, output_dir: Path) -> dict:
    """Fill the view cache of `cfg`'s teacher (a composed prefill config); returns what it did."""
    from kdrun.config.validate import validate_config
    from kdrun.data.datamodule import DataSplits
    from kdrun.engine.trainer import quiet_framework_chatter
    from kdrun.progress import Counter
    from kdrun.teachers.cached_outputs import compute_device
    from kdrun.teachers.obtain import obtain_teacher
    from kdrun.teachers.view_cache import open_view_cache, view_cache_obstacle

    options = cfg.prefill
    check_prefill_config(options)
    quiet_framework_chatter()
    checked = validate_config(cfg)
    splits = DataSplits.build(cfg.data, checked.seeds)
    obstacle = view_cache_obstacle(cfg, checked.losses, splits)
    if obstacle is not None:
        raise ConfigError(f"kdrun-prefill fills the view cache the students of this configuration read, but they "
                          f"would not read one: {obstacle}; allowed: data.augment=cifar_standard, or data.view_pool=V "
                          f"with another augmentation, and a teacher trained into the store")
    seeds = [int(seed) for seed in options.seeds] if options.get("seeds") is not None else [int(cfg.seed)]
    wanted = wanted_rows(cfg, splits, seeds, str(options.get("views", "all")))
    output_dir.mkdir(parents=True, exist_ok=True)
    teacher = obtain_teacher(cfg, splits, output_dir, divergence=checked.divergence)
    cache = open_view_cache(cfg, splits, teacher)
    if cache is None or not cache.writable:
        raise ConfigError(f"teacher store entry {teacher.path} cannot be written, so its view cache cannot be "
                          f"filled; allowed: a writable teacher.store")
    before = cache.fill_ratio()
    model = teacher.model.eval()
    started = time.perf_counter()
    try:
        with Counter(int(wanted.sum()), "prefill view cache", unit="view") as counter:
            fill_rows(cache, model, splits, wanted, int(options.batch_size), compute_device(cfg),
                      cfg.teacher.get("precision", "float32"), counter.update)
    finally:
        cache.close()
    views = splits.views
    record = {
        "teacher_key": teacher.key, "cache": str(cache.folder), "views_per_sample": views.count,
        "rows_wanted": int(wanted.sum()), "rows_found": cache.counters.hits, "rows_computed": cache.counters.computed,
        "rows_written": cache.counters.written, "fill_before": before, "fill_after": cache.fill_ratio(),
        "disk_mb": disk_megabytes(cache.folder), "wall_time_s": time.perf_counter() - started,
    }
    write_json(output_dir / "prefill.json", record)  # what this prefill did, beside Hydra's files
    print(f"view cache {cache.folder}: {record['rows_computed']:,} views computed, {record['rows_found']:,} already "
          f"there; {100 * record['fill_after']:.1f}% filled, {record['disk_mb']:,.1f} MB on disk, "
          f"{record['wall_time_s']:.1f} s")
    return record


def fill_rows(cache, model, splits, wanted: np.ndarray, batch_size: int, device, precision: str = "float32",
              progress=None) -> None:
    """Compute and store the rows of `cache` that `wanted` (samples x views) marks and the cache lacks, with
    `model` (in eval mode) on `device`, `batch_size` views per forward pass; `progress(n)` counts rows done."""
    import torch

    from kdrun.engine.teacher_forward import teacher_forward
    from kdrun.teachers.cached_outputs import device_of
    from kdrun.teachers.view_cache import BLOCK_SAMPLES

    progress = progress or (lambda count: None)
    dataset, views, finish = splits.source.train.dataset, splits.views, splits.eval_transform
    home = device_of(model)
    model.to(device)

    def compute(x, index, view_ids):
        cache.store(index, view_ids, teacher_forward(model, x.to(device), precision).cpu())
        cache.counters.computed += len(index)
        progress(len(index))

    pending = _Pending(batch_size, compute)
    try:
        with torch.inference_mode():
            # blocks of the cache's lock size: one block's rows are contiguous on disk
            samples = np.flatnonzero(wanted.any(axis=1))
            for start in range(0, len(samples), BLOCK_SAMPLES):
                chunk = samples[start:start + BLOCK_SAMPLES]
                images = torch.stack([dataset[int(index)][0] for index in chunk])
                for view in np.flatnonzero(wanted[chunk].any(axis=0)):
                    chosen = chunk[wanted[chunk, view]]
                    _, found = cache.lookup(torch.from_numpy(chosen), torch.full((len(chosen),), int(view)))
                    progress(int(found.sum()))
                    missing = chosen[~found.numpy()]
                    if len(missing):
                        x = views.apply_batch(images[np.searchsorted(chunk, missing)], int(view), missing)
                        pending.add(finish(x) if finish is not None else x, missing, int(view))
            pending.flush()
    finally:
        model.to(home)


class _Pending:
    """Views waiting for the teacher, passed to `compute(x, sample indices, view ids)` in batches of `batch_size`."""

    def __init__(self, batch_size: int, compute):
        self.batch_size, self.compute = batch_size, compute
        self.inputs, self.samples, self.views, self.count = [], [], [], 0

    def add(self, x, samples: np.ndarray, view: int) -> None:
        self.inputs.append(x)
        self.samples.append(samples)
        self.views.append(np.full(len(samples), view))
        self.count += len(samples)
        if self.count >= self.batch_size:
            self.flush(whole_batches_only=True)

    def flush(self, whole_batches_only: bool = False) -> None:
        import torch

        if not self.count:
            return
        x = torch.cat(self.inputs)
        samples, views = torch.from_numpy(np.concatenate(self.samples)), torch.from_numpy(np.concatenate(self.views))
        end = (self.count // self.batch_size) * self.batch_size if whole_batches_only else self.count
        for start in range(0, end, self.batch_size):
            stop = min(start + self.batch_size, end)
            self.compute(x[start:stop], samples[start:stop], views[start:stop])
        self.inputs, self.samples, self.views = [x[end:]], [samples[end:].numpy()], [views[end:].numpy()]
        self.count -= end


def disk_megabytes(folder: Path) -> float:
    """The disk the cache's files take (allocated blocks: the table is sparse until filled)."""
    return sum(path.stat().st_blocks * 512 for path in Path(folder).iterdir() if path.is_file()) / 2**20


def main() -> float | None:
    """The console script: the role groups (teacher=, student=), then the Hydra application."""
    register_role_groups()
    return hydra_main()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="prefill")
def hydra_main(cfg: DictConfig) -> float | None:
    from kdrun.jobs.commands import run_command_job

    return run_command_job("kdrun-prefill", prefill, cfg)["fill_after"]


if __name__ == "__main__":
    main()
