"""Data shapes shared by every part of emostream: the label set and the wire formats of the topics."""

from schemas.labels import ID2LABEL, LABEL2ID, LABELS, NUM_LABELS, label_id
from schemas.messages import DeadLetter, EmotionScore, ReviewItem, Tweet, describe_errors

__all__ = [
    "ID2LABEL",
    "LABEL2ID",
    "LABELS",
    "NUM_LABELS",
    "DeadLetter",
    "EmotionScore",
    "ReviewItem",
    "Tweet",
    "describe_errors",
    "label_id",
]
