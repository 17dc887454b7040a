-- Cluster variant of ../005_newest_version.sql (read its comments: the same rules hold here). The
-- superseded rows are sharded by tweet_id like the scores, and their view takes each one back out of its
-- own shard's rollup. emotion_trends_minute_local is created with the signed count, so the single-node
-- file's ALTER ... MODIFY COLUMN has nothing to do here (run on the Distributed table, it is a no-op too).
--
-- Rebuild the rollup: the recipe in ../005_newest_version.sql, with the workers stopped, except that the
-- two TRUNCATEs name the local tables and run on every shard:
--   TRUNCATE TABLE emotion_trends_minute_local ON CLUSTER '{cluster}'
--   TRUNCATE TABLE emotion_superseded_local ON CLUSTER '{cluster}'
-- and the two INSERTs go through the Distributed tables, as written there.
CREATE TABLE IF NOT EXISTS emotion_superseded_local ON CLUSTER '{cluster}'
(
    tweet_id      String,
    model_version LowCardinality(String),
    superseded_by LowCardinality(String),
    brand         LowCardinality(String),
    created_at    DateTime64(3, 'UTC'),
    label         LowCardinality(String),
    sadness       Float32,
    joy           Float32,
    love          Float32,
    anger         Float32,
    fear          Float32,
    surprise      Float32,
    superseded_at DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/emotion_superseded_local', '{replica}', superseded_at)
ORDER BY (tweet_id, model_version);

CREATE TABLE IF NOT EXISTS emotion_superseded ON CLUSTER '{cluster}' AS emotion_superseded_local
ENGINE = Distributed('{cluster}', currentDatabase(), emotion_superseded_local, cityHash64(tweet_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS emotion_superseded_mv ON CLUSTER '{cluster}' TO emotion_trends_minute_local AS
SELECT
    brand,
    toStartOfMinute(created_at) AS minute,
    model_version,
    label,
    -toInt64(count()) AS tweets,
    -sum(sadness) AS sadness,
    -sum(joy) AS joy,
    -sum(love) AS love,
    -sum(anger) AS anger,
    -sum(fear) AS fear,
    -sum(surprise) AS surprise
FROM emotion_superseded_local
GROUP BY brand, minute, model_version, label;

-- Over the Distributed emotion_scores: FINAL runs on each shard, and a tweet's rows are all on one shard.
CREATE VIEW IF NOT EXISTS emotion_scores_latest ON CLUSTER '{cluster}' AS
SELECT *
FROM emotion_scores FINAL
ORDER BY
    tweet_id,
    (
        match(model_version, '^v[0-9]{4,}$'),
        toUInt64OrZero(extract(model_version, '^v([0-9]{4,})$')),
        model_version
    ) DESC
LIMIT 1 BY tweet_id;
