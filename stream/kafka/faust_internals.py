"""Every use of faust-streaming's, mode-streaming's and aiokafka's private internals, in one module.

The worker leans on a few things these libraries do not promise: a method it overrides or replaces, an
attribute it reads or sets, a call it expects Faust to make. Each of those uses is here, as a small named
function or class whose docstring says which private attribute it relies on and why; the rest of
emostream calls these and touches no private attribute of Faust, mode or aiokafka itself.

They were written and tested against :data:`TESTED_VERSIONS`, and ``pyproject.toml`` pins the three
libraries to those minor versions. :data:`PINNED_INTERNALS` lists every private attribute used here;
:func:`missing_internals` names those that are gone, and the worker refuses to start while any is
(:func:`require_internals`). ``tests/test_faust_internals.py`` checks each one by name and the installed
versions against the pins. To move to a newer release: raise the pins, run that test, and reread each
function below against the new code (an attribute can stay while what it means changes).
"""

from __future__ import annotations

import asyncio
import dis
import importlib
import signal
import types
from collections.abc import Coroutine, Generator, Iterable, Mapping
from importlib import metadata
from typing import Any, NamedTuple, TypeVar

import faust
from faust.types import Message
from mode.services import WaitResults

from emostream.schemas.messages import DEAD_LETTER_KEY_MAX_BYTES, DEAD_LETTER_VALUE_MAX_BYTES, bound_bytes

T = TypeVar("T")

# The releases this module was written and tested for (pyproject.toml pins each to its minor version).
TESTED_VERSIONS = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}


class Internal(NamedTuple):
    """A private attribute this module relies on: ``name`` on ``owner`` (a class) in ``module``."""

    module: str
    owner: str
    name: str

    @property
    def dotted(self) -> str:
        """``module.owner.name``, as :func:`missing_internals` and the refusal to start name it."""
        return f"{self.module}.{self.owner}.{self.name}"

    def present(self) -> bool:
        """Whether the owner still has it: as a class attribute, or set on ``self`` by an ``__init__``."""
        try:
            owner = getattr(importlib.import_module(self.module), self.owner)
        except (ImportError, AttributeError):
            return False
        if hasattr(owner, self.name):
            return True
        return isinstance(owner, type) and any(_init_sets(klass, self.name) for klass in owner.__mro__)


def _init_sets(klass: type, name: str) -> bool:
    """Whether ``klass``'s own ``__init__`` assigns ``self.<name>`` (an instance attribute, absent on the class)."""
    init = vars(klass).get("__init__")
    if not isinstance(init, types.FunctionType):
        return False
    return any(op.opname == "STORE_ATTR" and op.argval == name for op in dis.get_instructions(init))


PINNED_INTERNALS: tuple[Internal, ...] = (
    # limit_fetch_wait
    Internal("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_create_worker_consumer"),
    Internal("aiokafka", "AIOKafkaConsumer", "_fetch_max_wait_ms"),
    # EagerDelivery, EagerDeliveryApp
    Internal("faust.transport.consumer", "Consumer", "_drain_messages"),
    Internal("mode.services", "Service", "_stopped"),
    Internal("mode.services", "Service", "_crashed"),
    Internal("faust.app.base", "App", "_new_transport"),
    # BoundedRecords
    Internal("faust.transport.drivers.aiokafka", "Consumer", "_to_message"),
    # StopSignalHook
    Internal("mode.worker", "Worker", "_schedule_shutdown"),
    # withhold_messages
    Internal("faust.types.tuples", "Message", "acked"),
    # committed_offsets
    Internal("faust.transport.consumer", "Consumer", "_committed_offset"),
)


def missing_internals() -> list[str]:
    """The dotted names of the :data:`PINNED_INTERNALS` that the installed libraries no longer have."""
    return [internal.dotted for internal in PINNED_INTERNALS if not internal.present()]


def installed_versions() -> dict[str, str]:
    """The installed version of each library in :data:`TESTED_VERSIONS` ("not installed" where none is)."""
    found = {}
    for name in TESTED_VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


class FaustInternalsMissing(RuntimeError):
    """Private attributes of Faust, mode or aiokafka that the worker relies on are gone."""


def require_internals() -> None:
    """Raise :class:`FaustInternalsMissing`, naming what is gone and the versions, unless all are present."""
    missing = missing_internals()
    if missing:
        raise FaustInternalsMissing(
            f"refusing to start: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} gone; "
            f"{__name__} (stream/kafka/faust_internals.py) was written for {_listed(TESTED_VERSIONS)}, "
            f"and {_listed(installed_versions())} are installed (install the versions pyproject.toml pins)"
        )


def _listed(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def limit_fetch_wait(max_wait_ms: int) -> None:
    """Cap the consumer's fetch long-poll, which faust-streaming hard-codes to 1,500 ms.

    Kafka answers a waiting fetch as soon as data arrives, but tansu holds it for the whole wait, so an
    idle-then-busy partition added ~0.75 s of latency on average. A short wait costs an idle worker a
    few extra fetch requests a second and nothing else.

    Private: replaces Faust's ``AIOKafkaConsumerThread._create_worker_consumer`` (process-wide; the one
    place the worker's ``AIOKafkaConsumer`` is built, with ``fetch_max_wait_ms=1500`` and no setting for
    it) by a wrapper that sets aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms`` on what it built, which
    ``AIOKafkaConsumer.start()`` reads when it builds its fetcher. Calling it again with the same wait
    does nothing; with another, it replaces the wrapper (never wraps a wrapper).
    """
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "emostream_wait_ms", None) == max_wait_ms:
        return
    original = getattr(create, "emostream_original", create)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by consumer.start() when it builds its fetcher
        return consumer

    create_worker_consumer.emostream_wait_ms = max_wait_ms  # type: ignore[attr-defined]  # a mark on the patch
    create_worker_consumer.emostream_original = original  # type: ignore[attr-defined]  # a mark on the patch
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]  # a deliberate patch


# Eager delivery (see emostream.stream.kafka.eager_delivery for why).


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
            return finished.value  # type: ignore[no-any-return]  # StopIteration.value is Any
        return (yield from _go_on(coro, waiting_on))
    result: T = yield from coro
    return result


async def _rest_of(coro: Coroutine[Any, Any, T], waiting_on: Any) -> T:
    """:func:`_go_on` as a native coroutine (mode's ``wait_first`` takes ``Awaitable`` instances only)."""
    return await _go_on(coro, waiting_on)


def _close(coros: tuple[Any, ...]) -> None:
    """The race's other coroutines, never started: closed, so nothing to cancel and no "never awaited" warning."""
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()


class EagerDelivery:
    """Mixin for a Faust consumer: ``wait_first`` runs its first coroutine's first step at once.

    See ``emostream.stream.kafka.eager_delivery`` for why. Private: written for faust-streaming's
    ``Consumer._drain_messages``, which delivers each record with
    ``await self.wait_first(callback(message), self.suspend_flow.wait())``; and it reads mode's
    ``Service._stopped`` and ``Service._crashed``, the two events mode's own ``wait_first`` races too, so
    that with any flag already set the stock race runs from the start. If a later Faust delivers some
    other way, this override is simply not called (stock delivery, only slower).
    """

    _stopped: asyncio.Event
    _crashed: asyncio.Event

    async def wait_first(self, *coros: Any, timeout: float | None = None) -> WaitResults:
        """mode's race, with the first coroutine's first step run at once (stock when stopped, crashed, suspended)."""
        first = coros[0] if coros else None
        suspended = getattr(self, "suspend_flow", None)
        if (
            not asyncio.iscoroutine(first)
            or self._stopped.is_set()
            or self._crashed.is_set()
            or (suspended is not None and suspended.is_set())
        ):
            return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc, no-any-return]  # mixin: mode's method
        try:
            waiting_on = first.send(None)
        except StopIteration as finished:
            _close(coros[1:])
            return WaitResults([first], [finished.value], False)
        except BaseException:
            _close(coros[1:])
            raise
        rest = _rest_of(first, waiting_on)
        waited: WaitResults = await super().wait_first(rest, *coros[1:], timeout=timeout)  # type: ignore[misc]  # mixin: mode's method
        return WaitResults([first if done is rest else done for done in waited.done], waited.results, waited.stopped)


def eager_consumer(consumer_class: type[Any]) -> type[Any]:
    """``consumer_class`` (a Faust transport's consumer) with :class:`EagerDelivery` in front of it."""
    if issubclass(consumer_class, EagerDelivery):
        return consumer_class
    return type(f"Eager{consumer_class.__name__}", (EagerDelivery, consumer_class), {})


class BoundedRecords:
    """Mixin for a Faust consumer: values over ``max_record_bytes`` and keys over a KiB are cut on arrival.

    See ``emostream.stream.kafka.bounded_consumer`` for why. Private: overrides faust-streaming's
    ``Consumer._to_message`` (the aiokafka driver's), where each fetched record becomes a ``Message``,
    the one place a record passes before it is queued. If a later Faust renames it, this override is
    simply not called, and the limit is still applied when the record is parsed, only later.
    """

    max_record_bytes: int

    def _to_message(self, tp: Any, record: Any) -> Any:
        message = super()._to_message(tp, record)  # type: ignore[misc]  # mixin: Faust's consumer's
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


class EagerDeliveryApp(faust.App):
    """A Faust app whose consumer delivers records with :class:`EagerDelivery`; everything else is Faust's.

    ``max_record_bytes``: its consumer also cuts larger values on arrival (:class:`BoundedRecords`).

    Private: overrides Faust's ``App._new_transport``, where the app builds its consumer transport, to
    swap that transport's ``Consumer`` class before any consumer is made from it.
    """

    def __init__(self, *args: Any, max_record_bytes: int | None = None, **kwargs: Any) -> None:
        self.max_record_bytes = max_record_bytes
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        transport = super()._new_transport()
        consumer = eager_consumer(transport.Consumer)
        if self.max_record_bytes is not None:
            consumer = bounded_consumer(consumer, self.max_record_bytes)
        transport.Consumer = consumer  # type: ignore[misc]  # faust types it a ClassVar; swapped on this instance only
        return transport


class StopSignalHook:
    """Mixin for a Faust (mode) worker: :meth:`on_stop_signal` is called at each SIGINT or SIGTERM.

    Private: overrides mode's ``Worker._schedule_shutdown``, which its signal handlers call with the
    signal; mode has no public hook for a stop signal. The stop itself is still mode's: it runs after
    :meth:`on_stop_signal`.
    """

    def on_stop_signal(self, signal: signal.Signals) -> None:
        """Called with the signal before mode schedules the worker's stop."""

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        self.on_stop_signal(signal)
        super()._schedule_shutdown(signal)  # type: ignore[misc]  # mixin: mode's Worker's


def withhold_messages(messages: Iterable[Message]) -> None:
    """Mark messages acked *without* recording their offsets, so Faust will never commit them.

    Private: sets Faust's ``Message.acked`` directly. ``Consumer.ack`` records a message's offset only
    when it finds ``acked`` unset (so a later ack is a no-op), and Faust's shutdown waits only for
    messages whose ``acked`` is unset.
    """
    for message in messages:
        message.acked = True


def committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """What a Faust consumer has committed, per partition: the next offset to read (None: nothing, or 0).

    Private: Faust's own record, ``Consumer._committed_offset``, kept on the event loop; Faust has no
    public accessor for it. An object without it (a consumer not yet made) has committed nothing.
    """
    committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
    return committed
