"""Data: sources (embedded, synthetic, torchvision formats, text), kappa subsets, label noise, and the per-stage
DataModule. The sources register themselves when imported here (kdrun.data.registry)."""

from kdrun.data import (embedded, imagenet_sources, synthetic, text, text_classification,  # noqa: F401  (register)
                        torchvision_sources)
from kdrun.data.registry import SOURCES, load_source, register_source
from kdrun.data.sources import Split, SourceSplits
from kdrun.data.subsets import kappa_subsets, seeded_order

__all__ = ["SOURCES", "Split", "SourceSplits", "load_source", "register_source", "kappa_subsets", "seeded_order"]
