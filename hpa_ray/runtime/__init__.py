"""Running a stage: the Ray session, the console, the CLI shape, the Parquet sink, and what the
cluster offers (resources). Imports only core."""
