"""Each run as a Hydra job: its status.json, the sweep recorder (a Hydra callback), launcher checks."""
