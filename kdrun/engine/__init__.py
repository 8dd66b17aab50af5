"""Training: the LightningModule, recipes (optimisers and learning-rate schedules), the loss schedule,
step metrics, divergence detection, resume, distributed helpers, loggers and the Trainer of each stage."""
