"""How a run obtains its teacher: the content-addressed store, imported checkpoints, oracle teachers,
the teacher's forward pass, and its outputs cached for every student."""
