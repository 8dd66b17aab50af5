"""Lightning callbacks used by the training stages."""

from kdrun.callbacks.analysis import analysis_callbacks
from kdrun.callbacks.eigenspace import EigenspaceTrajectory
from kdrun.callbacks.progress import EpochLogLine, StageProgressBar, progress_callbacks
from kdrun.callbacks.snapshots import LogitSnapshots

__all__ = ["EigenspaceTrajectory", "EpochLogLine", "LogitSnapshots", "StageProgressBar", "analysis_callbacks",
           "progress_callbacks"]
