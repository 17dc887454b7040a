"""Cut oversized record values the moment Faust makes them into messages, before any buffer holds them.

The worker buffers up to ``STREAM_BUFFER_EVENTS`` fetched records ahead of the agent, and a broker
accepts records of up to a megabyte (``message.max.bytes``), so a topic filled with large records could
make the worker hold gigabytes, all of it for records it will only dead-letter (anything over
``max_record_bytes`` is refused, see ``stream.worker.records``). faust-streaming turns each fetched record into
a ``Message`` in its consumer; this consumer mixin keeps, of a value over the limit, its first bytes with
the whole one's length and SHA-256 (an ``OversizedBytes``, ``schemas.messages``), which is all its dead
letter will carry. Keys are cut the same way.

The code lives in :mod:`emostream.stream.kafka.faust_internals` (it overrides a private method of Faust's
consumer, see :class:`~emostream.stream.kafka.faust_internals.BoundedRecords`); these are its public names.
"""

from __future__ import annotations

from emostream.stream.kafka.faust_internals import BoundedRecords, bounded_consumer

__all__ = ["BoundedRecords", "bounded_consumer"]
