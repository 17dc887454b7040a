"""Hot swap: a running worker follows the registry's ``current`` pointer and serves a promoted version.

Why it works this way:

- Polling the pointer's content is enough and works on any file system, a shared volume included: the
  registry replaces ``current`` atomically (``ModelRegistry.promote``), so a read gives the old name or
  the new one, never half of one, and a version directory is renamed into place whole before it is
  promoted.
- Loading takes seconds for a real model (weights, tokenizer, an ONNX session). It runs on a thread of
  its own, neither the event loop (heartbeats and fetches must keep flowing) nor the scoring thread
  (batches keep being scored by the old model meanwhile).
- The swap itself is one reference assignment (:meth:`emostream.stream.worker.scoring.BatchScorer.swap`), and the scorer
  reads its model once per batch: each batch is scored entirely by one version, and every batch that
  starts after the swap by the new one. Offsets are untouched, so no record is lost or scored twice.
- A version that fails to load is reported once and the old model keeps serving; it is not retried
  until the pointer changes again (a retry every few seconds would only repeat the error in the log).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emostream.model.config import RuntimeConfig
from emostream.model.registry import ModelRegistry
from emostream.model.runtime import ScoringRuntime, load_runtime
from emostream.stream.worker.scoring import BatchScorer

log = logging.getLogger("emostream.worker")
Loader = Callable[[RuntimeConfig, Path], ScoringRuntime]


def registry_version(model: ScoringRuntime) -> str:
    """The registry version a runtime serves; its rows may record more (``benchmark-fixed`` marks its own)."""
    return getattr(model, "registry_version", model.version)


class ModelWatcher:
    """Polls ``current``; on a new name, loads that version off the loop and swaps it into the scorer."""

    def __init__(
        self, runtime: RuntimeConfig, registry: Path, scorer: BatchScorer, loader: Loader = load_runtime
    ) -> None:
        self.runtime = runtime
        self.scorer = scorer
        self.loader = loader
        self.registry = ModelRegistry(registry)
        self.seen = registry_version(scorer.model)  # the pointer content last acted on, loaded or failed
        self._executor: ThreadPoolExecutor | None = None

    async def check(self) -> bool:
        """One poll. True when a new version was loaded and will score from the next batch on."""
        name = await asyncio.to_thread(self.registry.pointer)  # a file on a stalled network volume can block
        if name is None or name == self.seen:
            return False
        self.seen = name
        serving = registry_version(self.scorer.model)
        if name == serving:  # pointed back at the version in use, e.g. after a broken one was promoted
            log.info("model %s: the registry points at the version already serving", name)
            return False
        started = time.perf_counter()
        try:
            version = self.registry.get(name)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="emostream-model-load")
            model = await asyncio.get_running_loop().run_in_executor(self._executor, self._load, version.path)
        except Exception as exc:
            log.error(
                "model %s -> %s: loading failed, still serving %s (retried when `current` changes again): %s",
                serving,
                name,
                serving,
                exc,
            )
            return False
        self.scorer.swap(model)
        log.info(
            "model %s -> %s: loaded in %.2f s, serving from the next batch (%s)",
            serving,
            name,
            time.perf_counter() - started,
            model.runtime_name,
        )
        return True

    def _load(self, path: Path) -> ScoringRuntime:
        """Load exactly as the worker does at start, try it once, and freeze it (on the loading thread).

        The trial prediction catches a version that loads but cannot score before it replaces a working
        one, and spares the first real batch the runtime's lazy initialisation.

        Freezing, as ``run_worker`` does after the first load, moves the new model's long-lived objects
        out of the collector's reach, so full collections do not walk them on every cycle. The old model
        is freed by reference counting once the last batch using it is done (checked: neither the torch
        nor the ONNX runtime is held by a reference cycle), so it need not be unfrozen.
        """
        model = self.loader(self.runtime, path)
        model.predict_proba(["a trial run before serving"])
        gc.collect()
        gc.freeze()
        return model

    async def run(self, interval: float) -> None:
        """Poll every ``interval`` seconds until cancelled (the app's stop cancels its tasks)."""
        try:
            while True:
                await asyncio.sleep(interval)
                await self.check()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the loading thread; a load in progress finishes on it and is dropped."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
