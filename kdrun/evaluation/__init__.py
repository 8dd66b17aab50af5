"""After training: teacher and student on the whole splits, metrics.json values, predictions.npz and
per_sample.csv."""
