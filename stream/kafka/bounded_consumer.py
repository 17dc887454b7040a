"""Cut oversized record values the moment Faust makes them into messages, before any buffer holds them.

The worker buffers up to ``STREAM_BUFFER_EVENTS`` fetched records ahead of the agent, and a broker
accepts records of up to a megabyte (``message.max.bytes``), so a topic filled with large records could
make the worker hold gigabytes, all of it for records it will only dead-letter (anything over
``max_record_bytes`` is refused, see ``stream.worker.records``). faust-streaming turns each fetched record into
a ``Message`` in its consumer's ``_to_message``; this consumer mixin keeps, of a value over the limit,
its first bytes with the whole one's length and SHA-256 (an ``OversizedBytes``), which is all its dead
letter will carry. Keys are cut the same way. ``_to_message`` is faust-streaming's (0.15) hook, the one
place a record passes before it is queued; if a later Faust renames it, this override is simply not
called, and the limit is still applied when the record is parsed, only later.
"""

from __future__ import annotations

from typing import Any

from emostream.schemas.messages import DEAD_LETTER_KEY_MAX_BYTES, DEAD_LETTER_VALUE_MAX_BYTES
from emostream.stream.worker.records import bound_bytes


class BoundedRecords:
    """Mixin for a Faust consumer: values over ``max_record_bytes`` and keys over a KiB are cut on arrival."""

    max_record_bytes: int

    def _to_message(self, tp: Any, record: Any) -> Any:
        message = super()._to_message(tp, record)  # type: ignore[misc]
        message.value = bound_bytes(message.value, self.max_record_bytes, DEAD_LETTER_VALUE_MAX_BYTES)
        message.key = bound_bytes(message.key, DEAD_LETTER_KEY_MAX_BYTES, DEAD_LETTER_KEY_MAX_BYTES)
        return message


def bounded_consumer(consumer_class: type[Any], max_record_bytes: int) -> type[Any]:
    """``consumer_class`` (a Faust transport's consumer) cutting records over ``max_record_bytes`` on arrival."""
    return type(
        f"Bounded{consumer_class.__name__}",
        (BoundedRecords, consumer_class),
        {"max_record_bytes": max_record_bytes},
    )
