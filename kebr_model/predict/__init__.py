"""`kebr-train predict` and `kebr_model.load_run`: score new clips with a fine-tuned run.

    model_io.py        the one adapter to the trainer (checkpoint, model, samples, batches)
    settings_check.py  the features must be made as the run's training shards were (refusals)
    pipeline.py        `--src`: the stages the model needs, run into OUT/cache with those settings
    scoring.py         one row per clip: status, reason, prediction, classes, heads, c_a, c_v
    output.py          predictions.parquet / .csv, the terminal table, --json
    api.py             load_run(...).predict / .predict_shards / .predict_batch
    command.py         the command itself
"""
