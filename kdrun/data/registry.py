"""The data sources' registry: `data.source` names one; `load_source(cfg)` checks its settings and loads it."""

from __future__ import annotations

from kdrun.config.checks import check_choice, check_fraction, check_list, check_seed, check_whole_number
from kdrun.data.sources import SourceSplits
from kdrun.errors import ConfigError
from kdrun.registry import Registry

SOURCES = Registry("data source", "data.source")


def register_source(name: str, options=None):
    """Register a loader `cfg -> SourceSplits`; `options(cfg)` checks the source's own settings
    before anything loads (also from validate_config, before anything is built)."""
    return SOURCES.register(name, options=options)


def check_source_config(cfg) -> None:
    """`data.source`, the source's own options, and the shape and class count it is declared with."""
    check_choice(cfg.get("source"), "data.source", SOURCES.names())
    options = SOURCES.info(cfg.source).get("options")
    if options is not None:  # first: the declared shape may be made of them (image_size)
        options(cfg)
    check_whole_number(cfg.get("num_classes"), "data.num_classes", minimum=1, allow_none=True,
                       meaning="null: text sources fill in their vocabulary size or label count; image_folder needs it set")
    shape = check_list(cfg.get("input_shape"), "data.input_shape", allow_none=True,
                       meaning="the source's input shape, e.g. [3, 32, 32]")
    for index, size in enumerate(shape or []):
        check_whole_number(size, f"data.input_shape[{index}]", minimum=1)
    check_fraction(cfg.get("val_fraction", 0.1), "data.val_fraction", False, False,
                   meaning="the validation share held out of the training data")
    check_seed(cfg.get("split_seed", 0), "data.split_seed", meaning="the validation and test splits")


def load_source(cfg) -> SourceSplits:
    check_source_config(cfg)
    splits = SOURCES.get(cfg.source)(cfg)
    if cfg.num_classes is None and (splits.task == "next_token" or splits.input_kind == "text"):
        # the tokenizer's vocabulary, or the label names; the models' ${data.num_classes} follow
        cfg.num_classes = splits.num_classes
    if splits.num_classes != cfg.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.num_classes} but source {cfg.source!r} has {splits.num_classes} classes"
        )
    shape = cfg.get("input_shape")
    if shape is not None and tuple(shape) != tuple(splits.input_shape):
        raise ConfigError(f"data.input_shape={list(shape)} but source {cfg.source!r} yields inputs of shape "
                          f"{list(splits.input_shape)}; allowed: {list(splits.input_shape)} (or null: the source's)")
    return splits
