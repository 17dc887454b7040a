-- Cluster variant of ../003_trends.sql. The rollup is kept per shard: the materialized view sits on each
-- shard's emotion_scores_local (an INSERT into the Distributed emotion_scores reaches it there) and writes
-- into that shard's emotion_trends_minute_local. Reads go through the Distributed emotion_trends_minute and
-- sum over the shards, as on one node: always sum(tweets). The count is signed from the start (005).
CREATE TABLE IF NOT EXISTS emotion_trends_minute_local ON CLUSTER '{cluster}'
(
    brand         LowCardinality(String),
    minute        DateTime('UTC'),
    model_version LowCardinality(String),
    label         LowCardinality(String),
    tweets        Int64,
    sadness       Float64,
    joy           Float64,
    love          Float64,
    anger         Float64,
    fear          Float64,
    surprise      Float64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/emotion_trends_minute_local', '{replica}')
ORDER BY (brand, minute, model_version, label);

CREATE TABLE IF NOT EXISTS emotion_trends_minute ON CLUSTER '{cluster}' AS emotion_trends_minute_local
ENGINE = Distributed('{cluster}', currentDatabase(), emotion_trends_minute_local, cityHash64(brand, minute));

CREATE MATERIALIZED VIEW IF NOT EXISTS emotion_trends_minute_mv ON CLUSTER '{cluster}' TO emotion_trends_minute_local AS
SELECT
    brand,
    toStartOfMinute(created_at) AS minute,
    model_version,
    label,
    count() AS tweets,
    sum(sadness) AS sadness,
    sum(joy) AS joy,
    sum(love) AS love,
    sum(anger) AS anger,
    sum(fear) AS fear,
    sum(surprise) AS surprise
FROM emotion_scores_local
GROUP BY brand, minute, model_version, label;
