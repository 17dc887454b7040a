-- The human review queue. Items come from the scorer, in the same batch as the scores (so they are
-- written before the batch's offsets can be committed); a re-delivered review record collapses into
-- one row per tweet. Pending = in review_queue and without a row in review_labels.
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
    queued_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(queued_at)
ORDER BY tweet_id;

-- Every label a person gave, history kept: the latest event per tweet counts (argMax(.., labelled_at));
-- an undo is an event with retracted = true, after which the tweet is pending again.
CREATE TABLE IF NOT EXISTS review_labels
(
    tweet_id      String,
    label         LowCardinality(String),   -- one of the six, or 'none' (no emotion fits)
    reviewer      LowCardinality(String),
    labelled_at   DateTime64(3, 'UTC'),
    model_version LowCardinality(String),   -- the version whose doubt sent the tweet to review
    confidence    Float32,
    retracted     Bool DEFAULT false        -- this event withdraws the reviewer's earlier label
)
ENGINE = MergeTree
ORDER BY (tweet_id, labelled_at);
