-- One row per (tweet, model version). ReplacingMergeTree collapses re-deliveries of the same tweet
-- (at-least-once delivery after a crash) into one row: query with FINAL, or aggregate with uniqExact.
-- No PARTITION BY on time: duplicates are only collapsed within a partition, and the sorting key
-- alone must decide what counts as the same row.
CREATE TABLE IF NOT EXISTS emotion_scores
(
    tweet_id      String,
    brand         LowCardinality(String),
    created_at    DateTime64(3, 'UTC'),
    scored_at     DateTime64(3, 'UTC'),
    model_version LowCardinality(String),
    label         LowCardinality(String),
    confidence    Float32,
    margin        Float32,
    sadness       Float32,
    joy           Float32,
    love          Float32,
    anger         Float32,
    fear          Float32,
    surprise      Float32,
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3),  -- set by ClickHouse: when the row became visible
    INDEX created_at_minmax created_at TYPE minmax GRANULARITY 4,
    INDEX brand_set brand TYPE set(1024) GRANULARITY 4
)
ENGINE = ReplacingMergeTree(scored_at)
ORDER BY (tweet_id, model_version);
