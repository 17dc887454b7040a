-- The ClickHouse user behind emostream's user SQL in production (`emostream sql`, the worker's /sql
-- endpoint), the review service's trends page and Grafana: it reads emostream's tables and can do nothing
-- else. The docker compose stack applies this file at every start (../init/emostream-users.sh, with the
-- password from .env's CLICKHOUSE_READER_PASSWORD). On a ClickHouse of your own, run it once as an
-- administrator, with your password and database:
--
--   clickhouse-client --user admin --multiquery < deploy/clickhouse/access/emostream_reader.sql
--   export EMOSTREAM_CLICKHOUSE_QUERY_DSN=http://emostream_reader:<password>@clickhouse:8123/emostream
--
-- What holds it in, all of it enforced by the server:
-- - the profile makes every session read-only (readonly = 1: no writes, no DDL, no SET, no table
--   functions) and bounds each statement in time, result size and memory; readonly also stops the
--   client from lifting those limits. Two exceptions, CHANGEABLE_IN_READONLY (which needs the server's
--   settings_constraints_replace_previous: on in the image, pinned by ../server/config.xml): a client
--   may set max_execution_time up to 60 s, and ask for compressed HTTP responses. Grafana's ClickHouse
--   plugin (clickhouse-go) sends both with every query, and readonly = 1 would refuse the query otherwise;
-- - the grants name emostream's tables only: no other database, no FILE/URL/REMOTE sources, no
--   KILL QUERY, no SYSTEM, no access management;
-- - the quota caps what one user can spend per minute, so a runaway dashboard cannot starve the workers.
-- When a release adds tables, add a GRANT SELECT line for each. Views too: emotion_scores_latest is
-- a plain view, run with the reader's own rights, so it needs SELECT on it and on emotion_scores.

CREATE SETTINGS PROFILE IF NOT EXISTS emostream_reader_profile SETTINGS
    readonly = 1,
    max_execution_time = 30 MAX 60 CHANGEABLE_IN_READONLY,
    max_result_rows = 100000,
    max_result_bytes = 64000000,
    result_overflow_mode = 'throw',
    max_memory_usage = 4000000000,
    output_format_json_quote_64bit_integers = 0,
    enable_http_compression CHANGEABLE_IN_READONLY;

CREATE USER IF NOT EXISTS emostream_reader
    IDENTIFIED WITH sha256_password BY 'change-me'
    SETTINGS PROFILE 'emostream_reader_profile';

CREATE QUOTA IF NOT EXISTS emostream_reader_quota
    FOR INTERVAL 1 minute MAX queries = 600, execution_time = 600
    TO emostream_reader;

GRANT SELECT ON emostream.emotion_scores TO emostream_reader;
GRANT SELECT ON emostream.dead_letters TO emostream_reader;
GRANT SELECT ON emostream.emotion_trends_minute TO emostream_reader;
GRANT SELECT ON emostream.emotion_superseded TO emostream_reader;
GRANT SELECT ON emostream.emotion_scores_latest TO emostream_reader;
GRANT SELECT ON emostream.review_queue TO emostream_reader;
GRANT SELECT ON emostream.review_labels TO emostream_reader;
-- The team's review data: opinions, decisions, adjudications and the agreement figures. Not
-- review_reviewers: the reader has no business with the reviewers' token hashes.
GRANT SELECT ON emostream.review_adjudications TO emostream_reader;
GRANT SELECT ON emostream.review_label_events TO emostream_reader;
GRANT SELECT ON emostream.review_opinions TO emostream_reader;
GRANT SELECT ON emostream.review_decisions TO emostream_reader;
GRANT SELECT ON emostream.review_agreement TO emostream_reader;
GRANT SELECT ON emostream.review_reviewer_agreement TO emostream_reader;
