"""ClickHouse, a module a job: ``client`` (a client from a DSN), ``ddl`` (emostream's schema and applying
it), ``cluster`` (that schema for a replicated, sharded cluster), ``sink`` (writing the worker's batches and
reviewers' labels), ``supersede`` (which rows a newer model version supersedes), ``sql`` (read-only user
SQL), ``trends`` (the trend queries)."""
