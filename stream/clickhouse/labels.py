"""The SQL that reads the reviewers' labels: events, opinions, which items are done, the training file.

Labels are events (``review_labels``: a label, a relabel, an undo). The views of
``deploy/clickhouse/006_review_team.sql`` read them: ``review_label_events`` (each event with its item),
``review_opinions`` (each reviewer's current opinion of each item) and ``review_decisions`` (the label each
item gets from its opinions, or from an adjudicator, and how it was decided). The review queue
(``emostream.stream.review.queue``) and the retraining snapshot (``emostream.stream.web.endpoint``) read them
through the statements here, so they agree on what "done" and "labelled" mean.
"""

from __future__ import annotations

LABEL_EVENTS = "SELECT * FROM review_label_events"
# Items that need no more opinions: as many as the queue asks for ({opinions:UInt8}), or settled.
DONE_ITEMS = """
SELECT tweet_id, text_sha256 FROM review_opinions GROUP BY tweet_id, text_sha256 HAVING count() >= {opinions:UInt8}
UNION ALL
SELECT tweet_id, text_sha256 FROM review_adjudications
"""
# Items the reviewer {reviewer:String} holds an opinion of: never offered to them again.
GIVEN_BY = "SELECT tweet_id, text_sha256 FROM review_opinions WHERE reviewer = {reviewer:String}"
# The training file: the decided label of each item with the text of that item (the text the opinions were
# given for), disputed items and "none" (no emotion fits) left out, and how each label was decided. A tweet
# id with two labelled texts gives two rows. Read by the retraining job by name: tweet_id, text, label
# (and decision and weight, the reviewers' gold accuracy, when the snapshot has them: older ones do not).
TRAINING_LABELS_WITH_IDS = """
SELECT d.tweet_id AS tweet_id, q.text AS text, d.label AS label, d.decision AS decision, d.weight AS weight
FROM review_decisions AS d
GLOBAL INNER JOIN
    (SELECT tweet_id, text_sha256, any(text) AS text FROM review_queue GROUP BY tweet_id, text_sha256) AS q
    ON d.tweet_id = q.tweet_id AND d.text_sha256 = q.text_sha256
WHERE d.decision != 'disputed' AND d.label != 'none'
ORDER BY tweet_id, d.text_sha256
"""
