"""Data shapes shared by every part of emostream: the label set and the labels snapshot's columns
(``labels``), the wire formats of the topics (``messages``), and outside text made safe to show (``text``).

The wire models load on first use (``from emostream.schemas import Tweet`` works as usual): building pydantic
models costs ~30 ms, which commands like ``emostream --help`` never need.
"""

from typing import Any

from emostream.schemas.labels import ID2LABEL, LABEL2ID, LABELS, NUM_LABELS, label_id

_MESSAGES = {"DeadLetter", "EmotionScore", "NO_EMOTION", "ReviewItem", "ReviewLabel", "Tweet", "describe_errors"}

__all__ = [
    "ID2LABEL",
    "LABEL2ID",
    "LABELS",
    "NO_EMOTION",
    "NUM_LABELS",
    "DeadLetter",
    "EmotionScore",
    "ReviewItem",
    "ReviewLabel",
    "Tweet",
    "describe_errors",
    "label_id",
]


def __getattr__(name: str) -> Any:
    if name in _MESSAGES:
        from emostream.schemas import messages

        return getattr(messages, name)
    raise AttributeError(f"module 'emostream.schemas' has no attribute {name!r}")
