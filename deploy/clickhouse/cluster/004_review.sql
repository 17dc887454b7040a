-- Cluster variant of ../004_review.sql. Both tables are sharded by tweet_id: a tweet's queue rows and all
-- of its labels live on one shard. An item is (tweet_id, text_sha256), the SHA-256 of the text, computed
-- by ClickHouse (see ../004_review.sql for why).
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
    queued_at     DateTime64(3, 'UTC'),
    text_sha256   String MATERIALIZED lower(hex(SHA256(text)))
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/review_queue_local', '{replica}', queued_at)
PRIMARY KEY tweet_id
ORDER BY (tweet_id, text_sha256);

-- A cluster set up before text_sha256 existed (review_queue_local ORDER BY tweet_id): the same idempotent
-- two steps as ../004_review.sql, on the local tables (the Distributed table has no sorting key), then the
-- column on the Distributed table. Run again, or on a cluster created above, they change nothing.
ALTER TABLE review_queue_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS text_sha256 String,
    MODIFY ORDER BY (tweet_id, text_sha256);

ALTER TABLE review_queue_local ON CLUSTER '{cluster}'
    MODIFY COLUMN text_sha256 String MATERIALIZED lower(hex(SHA256(text)));

CREATE TABLE IF NOT EXISTS review_queue ON CLUSTER '{cluster}' AS review_queue_local
ENGINE = Distributed('{cluster}', currentDatabase(), review_queue_local, cityHash64(tweet_id));

ALTER TABLE review_queue ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS text_sha256 String MATERIALIZED lower(hex(SHA256(text)));

CREATE TABLE IF NOT EXISTS review_labels_local ON CLUSTER '{cluster}'
(
    tweet_id      String,
    label         LowCardinality(String),
    reviewer      LowCardinality(String),
    labelled_at   DateTime64(3, 'UTC'),
    model_version LowCardinality(String),
    confidence    Float32,
    retracted     Bool DEFAULT false,
    text_sha256   String DEFAULT ''
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/review_labels_local', '{replica}')
ORDER BY (tweet_id, labelled_at);

ALTER TABLE review_labels_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS text_sha256 String DEFAULT '';

CREATE TABLE IF NOT EXISTS review_labels ON CLUSTER '{cluster}' AS review_labels_local
ENGINE = Distributed('{cluster}', currentDatabase(), review_labels_local, cityHash64(tweet_id));

ALTER TABLE review_labels ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS text_sha256 String DEFAULT '';
