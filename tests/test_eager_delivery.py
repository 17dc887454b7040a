"""Eager delivery: a record's callback runs at once when it need not wait, and races the flags as before when it must.

Unit tests on mode's real ``Service.wait_first`` (the consumer's base) with a stand-in for the consumer's
flags; the worker's integration tests (tests/test_streaming.py: streaming, SIGKILL, two workers sharing
the partitions) run Faust's real consumer with it against the embedded broker.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Coroutine
from typing import Any

import mode
import pytest

from emostream.stream.kafka.eager_delivery import EagerDelivery, EagerDeliveryApp, eager_consumer


class Consumer(EagerDelivery, mode.Service):
    """The flags Faust's consumer races a delivery against: its suspend flag, and stopped/crashed from mode."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


def counting_tasks(loop: asyncio.AbstractEventLoop) -> list[Coroutine[Any, Any, Any]]:
    """Every task created on ``loop`` from now on, by its coroutine."""
    created: list[Coroutine[Any, Any, Any]] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> asyncio.Task[Any]:
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return created


def test_a_callback_that_need_not_wait_runs_at_once_without_a_single_task() -> None:
    async def run() -> None:
        consumer = Consumer()
        caller = asyncio.current_task()
        ran_in: list[asyncio.Task[Any] | None] = []

        async def deliver() -> str:
            ran_in.append(asyncio.current_task())
            return "delivered"

        created = counting_tasks(asyncio.get_running_loop())
        callback = deliver()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the suspend flag's wait() must be closed, not left "never awaited"
            done = await consumer.wait_first(callback, consumer.suspend_flow.wait())
        assert created == []
        assert ran_in == [caller]  # in the fetch loop's own task
        assert done.done == [callback] and done.results == ["delivered"] and not done.stopped

    asyncio.run(run())


def test_a_callback_that_waits_is_finished_through_the_race_and_keeps_its_identity() -> None:
    async def run() -> None:
        consumer = Consumer()
        caller = asyncio.current_task()
        room = asyncio.get_running_loop().create_future()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("first step" if asyncio.current_task() is caller else "elsewhere")
            await asyncio.sleep(0)  # a bare yield
            steps.append("after a bare yield")
            got = await room  # a full buffer, say
            steps.append(f"got {got}")
            return "delivered"

        async def make_room() -> None:
            await asyncio.sleep(0.05)
            room.set_result("room")

        asyncio.get_running_loop().create_task(make_room())
        callback = deliver()
        done = await consumer.wait_first(callback, consumer.suspend_flow.wait())
        assert steps == ["first step", "after a bare yield", "got room"]
        assert done.done == [callback] and done.results == ["delivered"] and not done.stopped

    asyncio.run(run())


def test_a_waiting_callback_is_cancelled_where_it_waits_when_the_flow_is_suspended() -> None:
    async def run() -> None:
        consumer = Consumer()
        never = asyncio.get_running_loop().create_future()
        seen: list[str] = []

        async def deliver() -> None:
            try:
                await never  # flow control suspended for a rebalance, say
            except asyncio.CancelledError:
                seen.append("cancelled where it waited")
                raise
            finally:
                seen.append("cleaned up")

        async def rebalance() -> None:
            await asyncio.sleep(0.05)
            consumer.suspend_flow.set()

        asyncio.get_running_loop().create_task(rebalance())
        suspended = consumer.suspend_flow.wait()
        done = await asyncio.wait_for(consumer.wait_first(deliver(), suspended), timeout=5)
        assert done.done == [suspended] and not done.stopped
        await asyncio.sleep(0)  # the cancellation reaches the callback's task
        assert seen == ["cancelled where it waited", "cleaned up"]

    asyncio.run(run())


def test_with_the_flow_already_suspended_the_stock_race_runs_from_the_start() -> None:
    async def run() -> None:
        consumer = Consumer()
        consumer.suspend_flow.set()
        caller = asyncio.current_task()
        ran_in: list[asyncio.Task[Any] | None] = []

        async def deliver() -> None:
            ran_in.append(asyncio.current_task())

        await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
        assert ran_in and ran_in[0] is not caller  # in a task of its own, as stock Faust runs it

    asyncio.run(run())


def test_a_failure_in_the_first_step_reaches_the_fetch_loop() -> None:
    async def run() -> None:
        consumer = Consumer()

        async def deliver() -> None:
            raise ValueError("cannot decode")

        with pytest.raises(ValueError, match="cannot decode"):
            await consumer.wait_first(deliver(), consumer.suspend_flow.wait())

    asyncio.run(run())


def test_the_worker_app_builds_its_consumer_with_eager_delivery() -> None:
    app = EagerDeliveryApp("eager-probe", broker="kafka://localhost:9")
    consumer_class = app.transport.Consumer
    assert issubclass(consumer_class, EagerDelivery)
    assert eager_consumer(consumer_class) is consumer_class  # not wrapped twice
    assert consumer_class.__mro__[2].__module__ == "faust.transport.drivers.aiokafka"  # Faust's own behind it
