-- Cluster variant of ../002_dead_letters.sql. Sharded by the source coordinates, so a re-delivered dead
-- letter meets its first copy on the same shard and collapses into it.
CREATE TABLE IF NOT EXISTS dead_letters_local ON CLUSTER '{cluster}'
(
    topic       LowCardinality(String),
    partition   UInt32,
    offset      UInt64,
    key         Nullable(String),
    value       Nullable(String),
    value_length Nullable(UInt64),
    value_sha256 Nullable(String),
    error       String,
    failed_at   DateTime64(3, 'UTC'),
    inserted_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/dead_letters_local', '{replica}', failed_at)
ORDER BY (topic, partition, offset);

CREATE TABLE IF NOT EXISTS dead_letters ON CLUSTER '{cluster}' AS dead_letters_local
ENGINE = Distributed('{cluster}', currentDatabase(), dead_letters_local, cityHash64(topic, partition, offset));

-- Tables created before dead letters were bounded: the two columns that describe a value cut short.
ALTER TABLE dead_letters_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS value_length Nullable(UInt64) AFTER value,
    ADD COLUMN IF NOT EXISTS value_sha256 Nullable(String) AFTER value_length;
ALTER TABLE dead_letters ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS value_length Nullable(UInt64) AFTER value,
    ADD COLUMN IF NOT EXISTS value_sha256 Nullable(String) AFTER value_length;
