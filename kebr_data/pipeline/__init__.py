"""The engine's pieces: the plan (index stage), the engine that decides and schedules the
(stage, shard) units, the worker-side shard task that runs and commits one, and the summaries
that status, report and the end of a run print."""
