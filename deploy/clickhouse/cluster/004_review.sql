-- Cluster variant of ../004_review.sql. Both tables are sharded by tweet_id: a tweet's queue row and all
-- of its labels live on one shard.
CREATE TABLE IF NOT EXISTS review_queue_local ON CLUSTER '{cluster}'
(
    tweet_id      String,
    brand         LowCardinality(String),
    created_at    DateTime64(3, 'UTC'),
    text          String,
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
    reason        String,
    queued_at     DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/review_queue_local', '{replica}', queued_at)
ORDER BY tweet_id;

CREATE TABLE IF NOT EXISTS review_queue ON CLUSTER '{cluster}' AS review_queue_local
ENGINE = Distributed('{cluster}', currentDatabase(), review_queue_local, cityHash64(tweet_id));

CREATE TABLE IF NOT EXISTS review_labels_local ON CLUSTER '{cluster}'
(
    tweet_id      String,
    label         LowCardinality(String),
    reviewer      LowCardinality(String),
    labelled_at   DateTime64(3, 'UTC'),
    model_version LowCardinality(String),
    confidence    Float32,
    retracted     Bool DEFAULT false
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/review_labels_local', '{replica}')
ORDER BY (tweet_id, labelled_at);

CREATE TABLE IF NOT EXISTS review_labels ON CLUSTER '{cluster}' AS review_labels_local
ENGINE = Distributed('{cluster}', currentDatabase(), review_labels_local, cityHash64(tweet_id));
