"""The SQL that reads the reviewers' labels: every label event, each item's current label, the training file.

Labels are events (``review_labels``: a label, a relabel, an undo); the current label of an item is its
latest event. The review queue (``emostream.stream.review.queue``) reads them to know what is labelled, and
the retraining snapshot (``emostream.stream.web.endpoint``) reads ``TRAINING_LABELS_WITH_IDS``, the file a
round trains on: both go through these statements, so they agree on what "labelled" means.
"""

from __future__ import annotations

# Every label event, with the item it is for. A label from before text_sha256 ('') is bound to its tweet
# id's one text while the queue holds only one; otherwise to none ('' again, which matches no item).
LABEL_EVENTS = """
SELECT l.tweet_id AS tweet_id, if(l.text_sha256 != '', l.text_sha256, legacy.only_sha256) AS text_sha256,
       l.label AS label, l.reviewer AS reviewer, l.labelled_at AS labelled_at,
       l.model_version AS model_version, l.confidence AS confidence, l.retracted AS retracted
FROM review_labels AS l
GLOBAL LEFT JOIN (
    SELECT tweet_id, any(text_sha256) AS only_sha256 FROM review_queue
    WHERE tweet_id GLOBAL IN (SELECT tweet_id FROM review_labels WHERE text_sha256 = '')
    GROUP BY tweet_id HAVING uniqExact(text_sha256) = 1
) AS legacy ON l.tweet_id = legacy.tweet_id
"""
CURRENT_LABELS = f"""
SELECT tweet_id, text_sha256, argMax(label, labelled_at) AS label, argMax(reviewer, labelled_at) AS reviewer,
       argMax(retracted, labelled_at) AS retracted, max(labelled_at) AS last_labelled_at
FROM ({LABEL_EVENTS}) WHERE text_sha256 != '' GROUP BY tweet_id, text_sha256
"""
LABELLED = f"SELECT tweet_id, text_sha256 FROM ({CURRENT_LABELS}) WHERE NOT retracted"
# The training file: the current label of each labelled item with the text of that item (the text the
# label was given for), "none" (no emotion fits) left out. A tweet id with two labelled texts gives two
# rows. Read by the retraining job by name: its columns stay tweet_id, text, label.
TRAINING_LABELS_WITH_IDS = f"""
SELECT l.tweet_id AS tweet_id, q.text AS text, l.label AS label
FROM ({CURRENT_LABELS}) AS l
INNER JOIN (SELECT tweet_id, text_sha256, any(text) AS text FROM review_queue GROUP BY tweet_id, text_sha256) AS q
    ON l.tweet_id = q.tweet_id AND l.text_sha256 = q.text_sha256
WHERE NOT l.retracted AND l.label != 'none'
ORDER BY tweet_id, l.text_sha256
"""
