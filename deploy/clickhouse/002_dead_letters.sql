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
    value       Nullable(String),            -- the record's raw bytes, unchanged, or their first 16 KiB
    value_length Nullable(UInt64),           -- the whole value's length in bytes
    value_sha256 Nullable(String),           -- the whole value's SHA-256 (hex): compare with the producer's copy
    error       String,
    failed_at   DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(failed_at)
ORDER BY (topic, partition, offset);

-- Tables created before dead letters were bounded: the two columns that describe a value cut short.
ALTER TABLE dead_letters
    ADD COLUMN IF NOT EXISTS value_length Nullable(UInt64) AFTER value,
    ADD COLUMN IF NOT EXISTS value_sha256 Nullable(String) AFTER value_length;
