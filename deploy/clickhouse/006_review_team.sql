-- Review as a team: named reviewers, several opinions per item, gold questions, and adjudication.
--
-- review_reviewers: the reviewers an operator added (`emostream reviewers add NAME`), one row per change
-- (added, revoked, added again with a new token); per name the latest row counts (ReplacingMergeTree by
-- changed_at, read with FINAL or argMax). Only the SHA-256 of each personal token is kept: the token itself
-- is shown once, to the operator who added the reviewer. The read-only SQL user is not granted this table.
CREATE TABLE IF NOT EXISTS review_reviewers
(
    name          String,                   -- what their labels carry in review_labels.reviewer
    role          LowCardinality(String),   -- 'reviewer', or 'adjudicator' (also settles disagreements)
    token_sha256  String,                   -- SHA-256 (hex) of the personal token
    added_at      DateTime64(3, 'UTC'),     -- when this token was issued
    revoked       Bool,                     -- true: the token and every session opened with it are dead
    changed_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(changed_at)
ORDER BY name;

-- An adjudicator's decision on an item whose opinions disagree: the label retraining takes for it.
-- History kept; per item the latest decision counts.
CREATE TABLE IF NOT EXISTS review_adjudications
(
    tweet_id      String,
    text_sha256   String,                   -- the item: the text the opinions were given for
    label         LowCardinality(String),   -- one of the six, or 'none'
    adjudicator   LowCardinality(String),   -- bound by the server to the credential
    decided_at    DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (tweet_id, text_sha256, decided_at);

-- Gold questions: tweets whose label is known, loaded by the operator (`emostream review gold FILE`), mixed
-- into each reviewer's queue at EMOSTREAM_REVIEW_GOLD_RATE, looking like any other item (the model's
-- scores are computed when they are loaded). Reviewers answer them like any item: their answers are label
-- events in review_labels, and what gives them away is only this table, which the page never reads.
-- `label` is the model's (as in review_queue), `gold_label` the known one.
CREATE TABLE IF NOT EXISTS review_gold
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
    gold_label    LowCardinality(String),   -- one of the six, or 'none'
    added_at      DateTime64(3, 'UTC'),
    text_sha256   String MATERIALIZED lower(hex(SHA256(text)))
)
ENGINE = ReplacingMergeTree(added_at)
ORDER BY (tweet_id, text_sha256);

-- Every label event with the item it is for. A label from before text_sha256 ('') is bound to its tweet
-- id's one text while the queue holds only one; otherwise to none ('' again, which matches no item), so a
-- re-sent text never inherits a label (stream/review/queue.py says more).
CREATE VIEW IF NOT EXISTS review_label_events AS
SELECT l.tweet_id AS tweet_id, if(l.text_sha256 != '', l.text_sha256, legacy.only_sha256) AS text_sha256,
       l.label AS label, l.reviewer AS reviewer, l.labelled_at AS labelled_at,
       l.model_version AS model_version, l.confidence AS confidence, l.retracted AS retracted
FROM review_labels AS l
GLOBAL LEFT JOIN
(
    SELECT tweet_id, any(text_sha256) AS only_sha256 FROM review_queue
    WHERE tweet_id GLOBAL IN (SELECT tweet_id FROM review_labels WHERE text_sha256 = '')
    GROUP BY tweet_id HAVING uniqExact(text_sha256) = 1
) AS legacy ON l.tweet_id = legacy.tweet_id;

-- Each reviewer's current opinion of each item: per (item, reviewer) the latest label event, unless that
-- event is an undo (the reviewer withdrew the opinion). An item is done when it has as many opinions as
-- EMOSTREAM_REVIEW_OPINIONS asks for (1 by default), or an adjudicator settled it.
CREATE VIEW IF NOT EXISTS review_answers AS
SELECT tweet_id, text_sha256, reviewer, argMax(given, at) AS label, max(at) AS labelled_at
FROM (SELECT tweet_id, text_sha256, reviewer, label AS given, labelled_at AS at, retracted FROM review_label_events)
WHERE text_sha256 != ''
GROUP BY tweet_id, text_sha256, reviewer
HAVING NOT argMax(retracted, at);

CREATE VIEW IF NOT EXISTS review_opinions AS
SELECT tweet_id, text_sha256, reviewer, label, labelled_at FROM review_answers
WHERE (tweet_id, text_sha256) GLOBAL NOT IN (SELECT tweet_id, text_sha256 FROM review_gold);

-- Each reviewer's accuracy on the gold questions they answered, and the weight retraining gives their
-- labels: their accuracy once they have answered 5 gold questions (GOLD_MIN_ANSWERS in
-- stream/review/gold.py), 1 before (no evidence yet: everyone counts fully, as without gold questions).
CREATE VIEW IF NOT EXISTS review_gold_accuracy AS
SELECT a.reviewer AS reviewer, count() AS answered, countIf(a.label = g.gold_label) AS correct,
       correct / answered AS accuracy, if(answered >= 5, accuracy, 1.0) AS weight
FROM review_answers AS a
GLOBAL INNER JOIN (SELECT tweet_id, text_sha256, any(gold_label) AS gold_label FROM review_gold
                   GROUP BY tweet_id, text_sha256) AS g
    ON a.tweet_id = g.tweet_id AND a.text_sha256 = g.text_sha256
GROUP BY a.reviewer;

-- The label each item with an opinion gets, and how it was decided (`decision`):
--   adjudicated  an adjudicator settled it (the latest decision counts), whatever the opinions say;
--   single       one opinion;
--   unanimous    two or more, all the same;
--   majority     a label with more than half of the opinions' weight;
--   disputed     no such label: the item waits for an adjudicator, and retraining leaves it out until one
--                settles it (the "disagreements" of the team page).
-- Opinions are weighed by their reviewer's gold accuracy (review_gold_accuracy.weight: 1 for everyone
-- until gold questions are answered). `label` is '' while disputed. `opinions` counts the opinions,
-- `votes` is the top label's share of their weight, and `weight` is what retraining gives the item: the
-- mean weight of the reviewers who gave its label (1 when adjudicated).
CREATE VIEW IF NOT EXISTS review_decisions AS
SELECT v.tweet_id AS tweet_id, v.text_sha256 AS text_sha256,
       multiIf(a.settled != '', 'adjudicated', v.opinions = 1, 'single', v.top_n = v.opinions, 'unanimous',
               v.top_weight * 2 > v.total_weight, 'majority', 'disputed') AS decision,
       multiIf(a.settled != '', a.settled, decision = 'disputed', '', v.top) AS label,
       v.opinions AS opinions, if(v.total_weight > 0, v.top_weight / v.total_weight, 0) AS votes,
       if(a.settled != '', 1.0, v.top_weight / v.top_n) AS weight, a.adjudicator AS adjudicator
FROM
(
    SELECT tweet_id, text_sha256, sum(n) AS opinions, sum(w) AS total_weight,
           arraySort(x -> (-x.2, -x.3, x.1), groupArray((label, w, n))) AS ranked,
           ranked[1].1 AS top, ranked[1].2 AS top_weight, ranked[1].3 AS top_n
    FROM
    (
        SELECT o.tweet_id AS tweet_id, o.text_sha256 AS text_sha256, o.label AS label, count() AS n,
               sum(if(g.reviewer = '', 1.0, g.weight)) AS w
        FROM review_opinions AS o
        GLOBAL LEFT JOIN (SELECT reviewer, weight FROM review_gold_accuracy) AS g ON o.reviewer = g.reviewer
        GROUP BY o.tweet_id, o.text_sha256, o.label
    )
    GROUP BY tweet_id, text_sha256
) AS v
GLOBAL LEFT JOIN
(
    SELECT tweet_id, text_sha256, argMax(label, decided_at) AS settled, argMax(adjudicator, decided_at) AS adjudicator
    FROM review_adjudications GROUP BY tweet_id, text_sha256
) AS a ON v.tweet_id = a.tweet_id AND v.text_sha256 = a.text_sha256;
