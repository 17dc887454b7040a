"""The emotion label set: the single source of truth for names and their integer ids.

The order is the Hugging Face Hub's ``emotion`` data set's ``ClassLabel`` order, so integer labels read
from the Hub, from the CARER text files and from our own models all mean the same thing.
"""

from typing import Final

LABELS: Final[tuple[str, ...]] = ("sadness", "joy", "love", "anger", "fear", "surprise")
"""Label names in the Hub's integer order: ``LABELS[i]`` is the name of label ``i``."""

NUM_LABELS: Final[int] = len(LABELS)
ID2LABEL: Final[dict[int, str]] = dict(enumerate(LABELS))
LABEL2ID: Final[dict[str, int]] = {name: i for i, name in ID2LABEL.items()}


def label_id(value: str | int) -> int:
    """Map a label given as a name (any case) or an integer id (or its string form) to its id.

    Raises ``ValueError`` naming the accepted values, so loaders can report a bad label precisely.
    """
    if isinstance(value, bool):
        raise ValueError(f"unknown label {value!r} (expected one of {', '.join(LABELS)} or 0-{NUM_LABELS - 1})")
    if isinstance(value, int):
        if 0 <= value < NUM_LABELS:
            return value
    else:
        text = value.strip()
        if text.lower() in LABEL2ID:
            return LABEL2ID[text.lower()]
        if text.isdigit() and int(text) < NUM_LABELS:
            return int(text)
    raise ValueError(f"unknown label {value!r} (expected one of {', '.join(LABELS)} or 0-{NUM_LABELS - 1})")
