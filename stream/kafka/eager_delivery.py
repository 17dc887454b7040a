"""Deliver each fetched record to its stream without four asyncio tasks per record.

faust-streaming's fetch loop hands over every record with
``await self.wait_first(callback(message), self.suspend_flow.wait())``. mode's ``wait_first`` wraps the
callback and three events (that suspend flag, the consumer's stopped and crashed flags) in a task each,
waits for the first to finish and cancels the others: four tasks, an ``asyncio.wait`` and three
cancellations per record. Profiled with ``py-spy --gil`` on a worker draining a backlog, that machinery
was about a third of the event loop's time, and the event loop is what bounds a worker's records per
second.

The race only matters when the delivery has to wait: a stream buffer full, flow control suspended for
a rebalance, the producer's buffer full. Almost always the callback puts the record in the stream's
buffer and returns without waiting at all. So :class:`EagerDelivery` runs the callback's first step at
once, in the fetch loop's own task, as Python 3.12's eager tasks would: if that finishes it, the record
is delivered and nothing was scheduled; if it stops to wait, the rest of it goes through the same
``wait_first`` as before, so a rebalance, a stop or a crash interrupts it exactly as before. With any of
those flags already set, the stock path runs from the start.

The code lives in :mod:`emostream.stream.kafka.faust_internals`, with every other use of Faust's private
internals (it is written against Faust's fetch loop and reads mode's private flags); these are its
public names.
"""

from __future__ import annotations

from emostream.stream.kafka.faust_internals import EagerDelivery, EagerDeliveryApp, eager_consumer

__all__ = ["EagerDelivery", "EagerDeliveryApp", "eager_consumer"]
