"""Training: the loop (`train.Trainer`), one run from preflight to plots (`run`), checkpoints, the optimiser
and schedule, the non-finite guard, and the progress bar."""
