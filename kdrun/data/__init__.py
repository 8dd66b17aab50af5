"""Data: sources (embedded, synthetic), kappa subsets, and the per-stage DataModule."""

from kdrun.data.sources import SOURCES, Split, SourceSplits, load_source, register_source
from kdrun.data.subsets import kappa_subsets, seeded_order

__all__ = ["SOURCES", "Split", "SourceSplits", "load_source", "register_source", "kappa_subsets", "seeded_order"]
