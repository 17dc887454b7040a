-- How far the reviewers agree with each other: figures over review_opinions (one row per item and
-- reviewer, the reviewer's current label for the item; an item is (tweet_id, text_sha256)). Read them with
-- `SELECT * FROM review_agreement` and `SELECT * FROM review_reviewer_agreement`, or in Python with
-- emostream.stream.review.agreement.team_agreement (which adds Cohen's kappa for each two reviewers).
--
-- Which items count: only items with at least two opinions (pairable items). An item one person labelled
-- says nothing about agreement, so it is left out of every figure here but `labelled` below.
--
-- review_agreement: Krippendorff's alpha, nominal level (labels are categories: any two different labels
-- disagree equally, there is no "closer" label). alpha = 1 - D_o / D_e, the disagreement observed between
-- opinions on the same item over the disagreement expected if the same opinions were dealt out to items
-- at random. It corrects for chance, unlike the plain share of agreeing pairs: if nearly everything is
-- "joy", reviewers agree often by chance alone, and alpha does not reward that.
--    1     perfect agreement (every item's opinions are the same label)
--    0     no better than chance
--    < 0   worse than chance (systematic disagreement)
--    NULL  undefined: no pairable item, or all their opinions are one label (no variation to agree on:
--          D_e = 0). Not "perfect": nothing can be told from such data.
-- A common reading: alpha >= 0.8 reliable, 0.667 .. 0.8 tentative, below that the labels are unreliable.
-- Formulas (coincidence matrix, nominal): over pairable items u, with m_u opinions of which n_uc are label
-- c, n = sum_u m_u and n_c = sum_u n_uc:
--    D_o = (1/n) * sum_u (m_u^2 - sum_c n_uc^2) / (m_u - 1)
--    D_e = (n^2 - sum_c n_c^2) / (n (n - 1))
-- Rows: label = '' is all labels together (always there: on no data alpha is NULL, the counts 0 and
-- observed_agreement nan); then one row per label that occurs in review_opinions ('none' included): the
-- binary alpha of that label against any other label (the per-category reading; NULL when the label is on
-- no pairable item, or on every opinion of them). Columns:
--    label              '' for all labels, else the label of a binary row
--    alpha              Nullable(Float64), as above
--    items              pairable items (the same on every row: a binary alpha reads the same data)
--    opinions           opinions on those items (n)
--    reviewers          reviewers with an opinion on one of those items
--    observed_agreement share of pairs of opinions on the same item that agree (for a binary row: both
--                       this label or both not it), pooled over all pairs, not corrected for chance;
--                       nan when there is no pair
--
-- review_reviewer_agreement: one row per reviewer in review_opinions.
--    labelled   their opinions (on any item)
--    shared     their opinions on items someone else also gave an opinion on (pairable items)
--    agreement  of the pairs (their opinion, another reviewer's opinion on the same item), the share with
--               the same label; NULL when shared = 0. Not corrected for chance: compare reviewers with it,
--               judge the team by alpha.
--
-- Both assume review_opinions' promise of one opinion per (item, reviewer). No window functions and no
-- joins of tables: each item's opinions are gathered into arrays by one GROUP BY, then unrolled with
-- ARRAY JOIN, each opinion carrying its item's m_u and the count k of its own label there (n_uc).
CREATE VIEW IF NOT EXISTS review_agreement AS
WITH
    agreement_items AS (
        SELECT tweet_id, text_sha256, groupArray(reviewer) AS reviewers, groupArray(label) AS labels, count() AS m
        FROM review_opinions
        GROUP BY tweet_id, text_sha256
    ),
    agreement_opinions AS (
        SELECT tweet_id, text_sha256, reviewer, label, toFloat64(m) AS m, toFloat64(countEqual(labels, label)) AS k
        FROM agreement_items
        ARRAY JOIN reviewers AS reviewer, labels AS label
    ),
    agreement_totals AS (
        SELECT
            uniqExactIf(tweet_id, text_sha256, m >= 2) AS items,
            countIf(m >= 2) AS opinions,
            uniqExactIf(reviewer, m >= 2) AS reviewers,
            toFloat64(opinions) AS n,
            sumIf((m - k) / (m - 1), m >= 2) AS disagreement,
            sumIf(k - 1, m >= 2) / 2 AS agreeing_pairs,
            sumIf(m - 1, m >= 2) / 2 AS pairs
        FROM agreement_opinions
    ),
    agreement_labels AS (
        SELECT
            label,
            toFloat64(countIf(m >= 2)) AS n_c,
            sumIf(2 * (m - k) / (m - 1), m >= 2) AS disagreement_c,
            sumIf(m - k, m >= 2) AS disagreeing_pairs_c
        FROM agreement_opinions
        GROUP BY label
    )
SELECT label, alpha, items, opinions, reviewers, observed_agreement
FROM
(
    SELECT
        '' AS label,
        CAST(
            if(t.n * t.n > s.squares, 1 - (t.n - 1) * t.disagreement / (t.n * t.n - s.squares), NULL)
            AS Nullable(Float64)
        ) AS alpha,
        toUInt64(t.items) AS items,
        toUInt64(t.opinions) AS opinions,
        toUInt64(t.reviewers) AS reviewers,
        toFloat64(t.agreeing_pairs / t.pairs) AS observed_agreement
    FROM agreement_totals AS t
    CROSS JOIN (SELECT sum(n_c * n_c) AS squares FROM agreement_labels) AS s
    UNION ALL
    SELECT
        toString(l.label) AS label,
        CAST(
            if(l.n_c > 0 AND l.n_c < t.n, 1 - (t.n - 1) * l.disagreement_c / (2 * l.n_c * (t.n - l.n_c)), NULL)
            AS Nullable(Float64)
        ) AS alpha,
        toUInt64(t.items) AS items,
        toUInt64(t.opinions) AS opinions,
        toUInt64(t.reviewers) AS reviewers,
        toFloat64((t.pairs - l.disagreeing_pairs_c) / t.pairs) AS observed_agreement
    FROM agreement_labels AS l
    CROSS JOIN agreement_totals AS t
)
ORDER BY label;

CREATE VIEW IF NOT EXISTS review_reviewer_agreement AS
SELECT
    reviewer,
    toUInt64(count()) AS labelled,
    toUInt64(countIf(m >= 2)) AS shared,
    CAST(if(shared = 0, NULL, sumIf(k - 1, m >= 2) / sumIf(m - 1, m >= 2)) AS Nullable(Float64)) AS agreement
FROM
(
    SELECT reviewer, toFloat64(m) AS m, toFloat64(countEqual(labels, label)) AS k
    FROM
    (
        SELECT groupArray(reviewer) AS reviewers, groupArray(label) AS labels, count() AS m
        FROM review_opinions
        GROUP BY tweet_id, text_sha256
    )
    ARRAY JOIN reviewers AS reviewer, labels AS label
)
GROUP BY reviewer
ORDER BY reviewer;
