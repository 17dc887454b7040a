-- One row per source record that could not be used (not JSON, not a tweet, ...), with why.
-- Dead letters are at-least-once like everything else: after a crash the re-delivered batch sends them
-- again. The sorting key is the record's source coordinates, so a repeat collapses into one row:
-- count with FINAL or uniqExact((topic, partition, offset)).
CREATE TABLE IF NOT EXISTS dead_letters
(
    topic       LowCardinality(String),
    partition   UInt32,
    offset      UInt64,
    key         Nullable(String),
    value       Nullable(String),            -- the record's raw bytes, unchanged
    error       String,
    failed_at   DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(failed_at)
ORDER BY (topic, partition, offset);
