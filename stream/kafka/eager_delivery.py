"""Deliver each fetched record to its stream without four asyncio tasks per record.

faust-streaming's fetch loop (``Consumer._drain_messages``) hands over every record with
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
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

import faust
from emostream.stream.kafka.bounded_consumer import bounded_consumer
from mode.services import WaitResults

T = TypeVar("T")


@types.coroutine
def _go_on(coro: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """The rest of ``coro``, whose first step stopped by yielding ``waiting_on``: ``yield from`` for the rest.

    Whatever drives this (a task) sees ``waiting_on`` first, as it would have from ``coro`` itself, and
    everything after that is ``coro``'s own: sends, a cancellation thrown in, its result.
    """
    try:
        yield waiting_on
    except GeneratorExit:
        coro.close()
        raise
    except BaseException as exc:  # cancelled while it waited (a rebalance, a stop): raised where it waits
        try:
            waiting_on = coro.throw(exc)
        except StopIteration as finished:
            return finished.value  # type: ignore[no-any-return]
        return (yield from _go_on(coro, waiting_on))
    return (yield from coro)  # type: ignore[misc]


async def _rest_of(coro: Coroutine[Any, Any, T], waiting_on: Any) -> T:
    """:func:`_go_on` as a native coroutine (mode's ``wait_first`` takes ``Awaitable`` instances only)."""
    return await _go_on(coro, waiting_on)


def _close(coros: tuple[Any, ...]) -> None:
    """The race's other coroutines, never started: closed, so nothing to cancel and no "never awaited" warning."""
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()


class EagerDelivery:
    """Mixin for a Faust consumer: ``wait_first`` runs its first coroutine's first step at once (see the module)."""

    _stopped: asyncio.Event
    _crashed: asyncio.Event

    async def wait_first(self, *coros: Any, timeout: float | None = None) -> WaitResults:
        first = coros[0] if coros else None
        suspended = getattr(self, "suspend_flow", None)
        if (
            not asyncio.iscoroutine(first)
            or self._stopped.is_set()
            or self._crashed.is_set()
            or (suspended is not None and suspended.is_set())
        ):
            return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc, no-any-return]
        try:
            waiting_on = first.send(None)
        except StopIteration as finished:
            _close(coros[1:])
            return WaitResults([first], [finished.value], False)
        except BaseException:
            _close(coros[1:])
            raise
        rest = _rest_of(first, waiting_on)
        waited: WaitResults = await super().wait_first(rest, *coros[1:], timeout=timeout)  # type: ignore[misc]
        return WaitResults([first if done is rest else done for done in waited.done], waited.results, waited.stopped)


def eager_consumer(consumer_class: type[Any]) -> type[Any]:
    """``consumer_class`` (a Faust transport's consumer) with :class:`EagerDelivery` in front of it."""
    if issubclass(consumer_class, EagerDelivery):
        return consumer_class
    return type(f"Eager{consumer_class.__name__}", (EagerDelivery, consumer_class), {})


class EagerDeliveryApp(faust.App):
    """A Faust app whose consumer delivers records with :class:`EagerDelivery`; everything else is Faust's.

    ``max_record_bytes``: its consumer also cuts larger values on arrival (``emostream.stream.kafka.bounded_consumer``).
    """

    def __init__(self, *args: Any, max_record_bytes: int | None = None, **kwargs: Any) -> None:
        self.max_record_bytes = max_record_bytes
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        consumer = eager_consumer(transport.Consumer)
        if self.max_record_bytes is not None:
            consumer = bounded_consumer(consumer, self.max_record_bytes)
        transport.Consumer = consumer
        return transport
