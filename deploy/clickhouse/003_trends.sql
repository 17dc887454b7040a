-- Trends: per brand x minute x model version x label, the number of tweets and the sums of the six
-- probabilities (mean = sum / tweets), kept up to date by a materialized view as rows arrive.
-- Dedup-safe: a materialized view sees every inserted row, so the worker inserts into emotion_scores
-- only the (tweet_id, model_version) pairs that are not there yet; a re-delivered batch adds nothing.
-- Hours and days are sums of minutes: GROUP BY toStartOfHour(minute).
-- A tweet scored by two model versions counts once, its newest version's row: 005_newest_version.sql
-- takes the older rows back out (rows with tweets = -1, hence the signed count). So always read it
-- with sum(tweets), never tweets alone, and drop groups that sum to 0 (HAVING sum(tweets) > 0).
-- Rows written before this view existed are not in it: backfill with the rebuild in 005_newest_version.sql.
CREATE TABLE IF NOT EXISTS emotion_trends_minute
(
    brand         LowCardinality(String),
    minute        DateTime('UTC'),
    model_version LowCardinality(String),
    label         LowCardinality(String),
    tweets        Int64,                    -- signed: a superseded version's row counts -1 (see 005)
    sadness       Float64,
    joy           Float64,
    love          Float64,
    anger         Float64,
    fear          Float64,
    surprise      Float64
)
ENGINE = SummingMergeTree
ORDER BY (brand, minute, model_version, label);

CREATE MATERIALIZED VIEW IF NOT EXISTS emotion_trends_minute_mv TO emotion_trends_minute AS
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
FROM emotion_scores
GROUP BY brand, minute, model_version, label;
