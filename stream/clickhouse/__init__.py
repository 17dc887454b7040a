"""ClickHouse: the sink that writes scores, dead letters, review items and labels; its DDL; read-only
user SQL; the trend queries."""
