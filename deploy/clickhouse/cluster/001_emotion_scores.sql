-- Cluster variant of ../001_emotion_scores.sql (see README.md here): a replicated table on every shard
-- (emotion_scores_local) and a Distributed table under emostream's name in front of it.
-- Sharded by tweet_id: every row of a tweet (each model version, each re-delivery) lands on one shard,
-- so ReplacingMergeTree collapses repeats and FINAL / LIMIT 1 BY tweet_id stay right across the cluster.
CREATE TABLE IF NOT EXISTS emotion_scores_local ON CLUSTER '{cluster}'
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
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX created_at_minmax created_at TYPE minmax GRANULARITY 4,
    INDEX brand_set brand TYPE set(1024) GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/emotion_scores_local', '{replica}', scored_at)
ORDER BY (tweet_id, model_version);

CREATE TABLE IF NOT EXISTS emotion_scores ON CLUSTER '{cluster}' AS emotion_scores_local
ENGINE = Distributed('{cluster}', currentDatabase(), emotion_scores_local, cityHash64(tweet_id));
