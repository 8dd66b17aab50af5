"""Lightning callbacks used by the training stages."""

from kdrun.callbacks.progress import EpochLogLine, StageProgressBar, progress_callbacks

__all__ = ["EpochLogLine", "StageProgressBar", "progress_callbacks"]
