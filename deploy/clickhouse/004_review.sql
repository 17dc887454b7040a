-- The human review queue. Items come from the scorer, in the same batch as the scores (so they are
-- written before the batch's offsets can be committed).
--
-- An item is a tweet id AND the text that came with it: (tweet_id, text_sha256), the SHA-256 of the text
-- that ClickHouse computes itself (MATERIALIZED: the writer cannot set it, and the worker's sink needs no
-- change). A re-delivered review record (same id, same text) collapses into one row. The same id re-sent
-- with other text is a second item, pending again, and a label never moves from one text to the other:
-- each label names the text it was given for (review_labels.text_sha256).
-- Pending = in review_queue and without a current label for that (tweet_id, text_sha256).
CREATE TABLE IF NOT EXISTS review_queue
(
    tweet_id      String,
    brand         LowCardinality(String),
    created_at    DateTime64(3, 'UTC'),
    text          String,
    model_version LowCardinality(String),
    label         LowCardinality(String),   -- the model's label
    confidence    Float32,
    margin        Float32,                  -- top probability minus the runner-up's: the queue's order
    sadness       Float32,
    joy           Float32,
    love          Float32,
    anger         Float32,
    fear          Float32,
    surprise      Float32,
    reason        String,
    queued_at     DateTime64(3, 'UTC'),
    text_sha256   String MATERIALIZED lower(hex(SHA256(text)))   -- 64 hex digits: which text the item is
)
ENGINE = ReplacingMergeTree(queued_at)
PRIMARY KEY tweet_id
ORDER BY (tweet_id, text_sha256);

-- Migration of a review_queue created before text_sha256 (ORDER BY tweet_id), idempotent: these two
-- statements run at every start and change nothing the second time (nor on a table created above).
-- ClickHouse appends to a sorting key only a column added in the same ALTER, and only one without a
-- default expression (old parts are not sorted by an expression of their rows). So the column is added
-- plain, with the key, and only then given its expression. That is safe here: under the old key every
-- part of a ReplacingMergeTree holds one row per tweet id (an insert is collapsed on the way in, and so
-- is every merge), so each old part is already sorted by (tweet_id, anything), and the old rows get
-- their hash computed from their text when read. Old rows are what the old key kept: one text per id.
-- On a cluster review_queue is a Distributed table, which has no sorting key to modify: the operator
-- migrates review_queue_local with this file's cluster variant (cluster/README.md), and emostream skips
-- the first statement there.
ALTER TABLE review_queue
    ADD COLUMN IF NOT EXISTS text_sha256 String,
    MODIFY ORDER BY (tweet_id, text_sha256);

ALTER TABLE review_queue MODIFY COLUMN text_sha256 String MATERIALIZED lower(hex(SHA256(text)));

-- Every label a person gave, history kept: per item (tweet_id, text_sha256) the latest event counts
-- (argMax(.., labelled_at)). An undo is an event with retracted = true, after which the item is pending
-- again. text_sha256 is the hash of the text the reviewer was shown (the page sends it back with the
-- label, and a label for a text the queue does not hold is refused). '' marks a label given before the
-- column existed: it counts for its tweet id only while the queue holds one text for that id (see
-- stream/review/queue.py, LABEL_EVENTS), so a re-sent text never inherits it.
CREATE TABLE IF NOT EXISTS review_labels
(
    tweet_id      String,
    label         LowCardinality(String),   -- one of the six, or 'none' (no emotion fits)
    reviewer      LowCardinality(String),   -- bound by the server to the credential, never the client's say
    labelled_at   DateTime64(3, 'UTC'),
    model_version LowCardinality(String),   -- the version whose doubt sent the tweet to review
    confidence    Float32,
    retracted     Bool DEFAULT false,       -- this event withdraws the reviewer's earlier label
    text_sha256   String DEFAULT ''         -- the text the label was given for ('' before this column)
)
ENGINE = MergeTree
ORDER BY (tweet_id, labelled_at);

ALTER TABLE review_labels ADD COLUMN IF NOT EXISTS text_sha256 String DEFAULT '';
