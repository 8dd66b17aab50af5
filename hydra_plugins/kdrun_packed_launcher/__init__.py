"""kdrun's packed launcher for Hydra (`kdrun -m hydra/launcher=packed ...`): kdrun.jobs.packed_sweep."""
