"""Storage: the output folder's layout, atomic commits, done markers, Parquet tables and the lock."""
