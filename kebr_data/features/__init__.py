"""Feature computations used by stages: pure numeric code, no I/O."""
