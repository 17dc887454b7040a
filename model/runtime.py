"""The model runtime: turns batches of texts into the six emotion probabilities, as fast as the device allows.

One runtime serves ``emostream predict``, ``evaluate`` and the stream workers, so a tweet gets the same
scores whichever way it is scored. Speed comes from batching done right (one fast-tokenizer call per
chunk, texts sorted by length so each padded chunk wastes little) and from the backend:

| runtime | where | what |
|---|---|---|
| ``torch-fp32`` | anywhere | the reference |
| ``torch-bf16`` | CPUs with native bf16 (AVX512-BF16/AMX), CUDA | bf16 weights (autocast on CUDA) |
| ``onnx-int8`` | CPUs | ONNX Runtime, per-channel dynamic int8 quantization |
| ``benchmark-fixed`` | anywhere | no model: fixed probabilities, for measuring the stream machinery only |

``auto`` picks the fastest one whose accuracy the version's serving check accepted (``serving.json``,
written by ``train``); fp32 otherwise. A fast path is never the default unless it was measured, and
``benchmark-fixed`` is never chosen by ``auto``: its scores mean nothing, it is for benchmarks only.

Confidence is calibrated by temperature scaling (:mod:`emostream.model.calibration`): a version's
``calibration.json`` holds the temperature ``T`` fitted on its validation split at training, and every
model-backed runtime returns ``softmax(logits / T)`` from :meth:`ScoringRuntime.predict_proba`, in one
place, so torch and ONNX scores stay alike. Dividing by ``T > 0`` keeps the top label; only the
confidence changes, so that of tweets scored at ~0.7 about 70% are right. A version without the file is
served with ``T = 1``, exactly as before; a file that is there but invalid refuses to load.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BatchEncoding

from emostream.model.calibration import Calibration, load_calibration, softmax
from emostream.model.config import RuntimeConfig
from emostream.schemas import LABELS

# Chunks of 16 tweets gain nothing from the tokenizer's own thread pool, which would only contend with
# the model's threads (and warns after a fork). Users can still set it explicitly.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

log = logging.getLogger("emostream.runtime")

SERVING_CHECK_FILE = "serving.json"
ONNX_DIR = "onnx"
Precision = Literal["fp32", "bf16"]
CPU_PREFERENCE = ("onnx-int8", "torch-bf16")
FIXED_RUNTIME = "benchmark-fixed"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN says so); without it ``auto`` never picks ``torch-bf16``."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


CHARS_PER_TOKEN = 64  # what the tokenizer is given of a text: max_length tokens' worth, generously


def batches_by_length(texts: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``texts`` in chunks of similar length, longest first.

    Padding to the longest text of a chunk wastes little when its texts are alike in length, and the
    first chunk shows the peak memory at once rather than at the end of a long run.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class ScoringRuntime:
    """What every backend shares: the tokenizer, the label check, and length-sorted chunking.

    ``batch_size`` is the chunk the backend runs at once. A worker's micro-batch (hundreds of tweets in
    arrival order) is sorted here and cut into such chunks: on a CPU, chunks of 16 similar-length tweets
    score faster than one padded chunk of 256.
    """

    needs_tokenizer = True  # FixedProbabilities scores without one
    uses_calibration = True  # FixedProbabilities has no logits to calibrate

    @property
    def runtime_name(self) -> str:
        """The runtime's name as rows record it (each runtime says its own)."""
        return "base"

    def __init__(self, model_dir: str | Path, batch_size: int = 16, max_length: int = 128) -> None:
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length
        # The tokenizer reads a whole text before it truncates to max_length tokens: a 900 KB text cost it
        # the time of thousands of tweets. No token is longer than 100 characters (WordPiece's limit), and
        # 64 a token leaves room for any real text's first max_length tokens.
        self.max_chars = max_length * CHARS_PER_TOKEN
        self.device = torch.device("cpu")
        if self.needs_tokenizer:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        config = AutoConfig.from_pretrained(self.model_dir)
        labels = [config.id2label[i] for i in range(config.num_labels)]
        if tuple(labels) != LABELS:
            raise ValueError(f"{self.model_dir}: the model's labels {labels} are not {list(LABELS)}")
        # The version's temperature (calibration.json); without one, T = 1: served exactly as before.
        self.calibration: Calibration | None = load_calibration(self.model_dir) if self.uses_calibration else None
        self.temperature = self.calibration.temperature if self.calibration is not None else 1.0

    @property
    def registry_version(self) -> str:
        """The registry version this runtime serves (its directory's name): what hot swap compares."""
        return self.model_dir.name

    @property
    def version(self) -> str:
        """What the rows it scores record as their model version."""
        return self.registry_version

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities of shape ``(len(texts), 6)`` in the order of :data:`schemas.LABELS`.

        ``softmax(logits / self.temperature)`` for every backend, here and nowhere else, so that torch and
        ONNX apply the same calibration; the top label is the logits' argmax whatever the temperature.
        """
        return softmax(self.predict_logits(texts), self.temperature)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw, uncalibrated logits of shape ``(len(texts), 6)``, in the order of ``texts`` (scored in
        length-sorted chunks): what a temperature is fitted on and a training loss is computed from."""
        out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        for index, encoded in self.encode(texts):
            out[index] = self._logits(encoded)
        return out

    def encode(self, texts: Sequence[str]) -> Iterator[tuple[list[int], BatchEncoding]]:
        """The chunks the model runs: each one's indices into ``texts`` and its tokens, padded to its longest.

        Public so that ``benchmarks/model_speed.py`` times exactly the tokenization the model gets.
        """
        for index in batches_by_length(texts, self.batch_size):
            yield (
                index,
                self.tokenizer(
                    [texts[i][: self.max_chars] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="np",
                ),
            )

    def _logits(self, encoded: BatchEncoding) -> np.ndarray:
        raise NotImplementedError


class EmotionModel(ScoringRuntime):
    """PyTorch: fp32, or bf16 weights on a CPU with native bf16; on CUDA, autocast to bf16/fp16."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        batch_size: int = 16,
        max_length: int = 128,
        precision: Precision = "fp32",
    ) -> None:
        super().__init__(model_dir, batch_size, max_length)
        self.device = resolve_device(device)
        self.precision = precision
        model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).to(self.device).eval()
        if precision == "bf16" and self.device.type == "cpu":
            model = model.to(torch.bfloat16)
        self.model = model

    @property
    def runtime_name(self) -> str:
        """The name rows record: ``torch-fp32``/``torch-bf16`` (plus the device off the CPU),
        or on CUDA ``torch-cuda-bf16``/``torch-cuda-fp16`` (its autocast dtype)."""
        if self.device.type == "cuda":
            return "torch-cuda-bf16" if torch.cuda.is_bf16_supported() else "torch-cuda-fp16"
        return f"torch-{self.precision}" + ("" if self.device.type == "cpu" else f"-{self.device.type}")

    @torch.inference_mode()
    def _logits(self, encoded: BatchEncoding) -> np.ndarray:
        inputs = {key: torch.from_numpy(value).to(self.device) for key, value in encoded.items()}
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                logits = self.model(**inputs).logits
        else:
            logits = self.model(**inputs).logits
        out: np.ndarray = logits.float().cpu().numpy()
        return out


class OnnxEmotionModel(ScoringRuntime):
    """ONNX Runtime on the CPU, from the ``onnx/`` files ``train`` exports beside the weights."""

    def __init__(self, model_dir: str | Path, batch_size: int = 16, max_length: int = 128, int8: bool = True) -> None:
        import onnxruntime

        super().__init__(model_dir, batch_size, max_length)
        self.int8 = int8
        path = self.model_dir / ONNX_DIR / ("model.int8.onnx" if int8 else "model.onnx")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ONNX export for this version (re-train, or use --runtime torch-fp32)")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between ops: in a worker the event loop shares the cores, and spinning threads
        # starve it (measured: the same batches ran up to 2x slower with spinning on).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    @property
    def runtime_name(self) -> str:
        """``onnx-int8`` or ``onnx-fp32``: which export this session runs."""
        return "onnx-int8" if self.int8 else "onnx-fp32"

    def _logits(self, encoded: BatchEncoding) -> np.ndarray:
        feed = {key: value.astype(np.int64) for key, value in encoded.items() if key in self.input_names}
        logits: np.ndarray = self.session.run(None, feed)[0]  # onnxruntime ships no type information
        return logits


class FixedProbabilities(ScoringRuntime):
    """No model at all: a fixed distribution per text, for measuring the stream machinery, never for serving.

    ``benchmarks/throughput.py`` runs a real worker with it to find how many tweets per second Kafka,
    Faust, parsing, the ClickHouse insert and the review sends carry when scoring costs nothing (what a
    GPU worker, which scores tens of times faster than a CPU, would be held to). Each text gets a valid
    distribution chosen by a CRC of the text (stable across processes and re-deliveries): the top label
    and its probability vary, so rows differ and some fall under the review threshold, as real ones do.
    Nothing is loaded but the version's config. Its rows record ``vNNNN+benchmark-fixed`` as their model
    version, so they can never pass for the real version's in ClickHouse, and a real score of the same
    tweet outranks them in the trends (:func:`emostream.model.registry.version_order` puts any such name below
    every registry version).
    """

    needs_tokenizer = False
    uses_calibration = False

    @property
    def runtime_name(self) -> str:
        """``benchmark-fixed``: no model at all."""
        return FIXED_RUNTIME

    @property
    def version(self) -> str:
        """``vNNNN+benchmark-fixed``: a name no real version has, so these rows never pass for real scores."""
        return f"{self.registry_version}+{FIXED_RUNTIME}"

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """A valid distribution per text by its CRC-32: the top label and its probability (0.30 to 0.99) vary."""
        n = len(LABELS)
        codes = np.fromiter((zlib.crc32(t.encode("utf-8")) for t in texts), dtype=np.uint32, count=len(texts))
        top = codes % n
        confidence = 0.3 + 0.69 * ((codes >> 8) % 1000) / 999.0  # 0.30 .. 0.99
        out = np.repeat(((1.0 - confidence) / (n - 1))[:, None], n, axis=1)
        out[np.arange(len(texts)), top] = confidence
        return out.astype(np.float32)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """The log of :meth:`predict_proba`: logits whose softmax gives those probabilities back."""
        logits: np.ndarray = np.log(self.predict_proba(texts))
        return logits


def build_runtime(
    name: str, model_dir: Path, device: str = "auto", batch_size: int = 16, max_length: int = 128
) -> ScoringRuntime:
    """A runtime by its name (``torch-fp32``, ``torch-bf16``, ``onnx-int8``, ``onnx-fp32``; ``benchmark-fixed``
    for benchmarks of the stream machinery only)."""
    if name == FIXED_RUNTIME:
        log.warning(
            "runtime %s: fixed probabilities, no model -- for measuring the stream machinery, never for serving",
            name,
        )
        return FixedProbabilities(model_dir, batch_size, max_length)
    if name.startswith("onnx-"):
        return OnnxEmotionModel(model_dir, batch_size, max_length, int8=name == "onnx-int8")
    precision: Precision = "bf16" if name == "torch-bf16" else "fp32"
    return EmotionModel(model_dir, device=device, batch_size=batch_size, max_length=max_length, precision=precision)


def accepted_runtimes(model_dir: Path) -> list[str]:
    """The fast runtimes this version's serving check accepted (empty when it has none)."""
    file = Path(model_dir) / SERVING_CHECK_FILE
    if not file.is_file():
        return []
    checks = json.loads(file.read_text()).get("runtimes", {})
    return [name for name, verdict in checks.items() if verdict.get("accepted")]


def choose_runtime(config: RuntimeConfig, model_dir: Path) -> str:
    """The runtime ``config`` names, or for ``auto`` the fastest one this version's serving check accepted."""
    if config.runtime != "auto":
        return config.runtime
    if resolve_device(config.device).type != "cpu":
        return "torch-fp32"  # autocast to bf16/fp16 on the GPU
    accepted = accepted_runtimes(model_dir)
    for name in CPU_PREFERENCE:  # never FIXED_RUNTIME, whatever serving.json says
        if name in accepted and (name != "torch-bf16" or cpu_has_native_bf16()):
            return name
    return "torch-fp32"


def load_runtime(config: RuntimeConfig, model_dir: Path) -> ScoringRuntime:
    """The runtime every scoring path uses (worker, predict, evaluate), so they agree to the last digit."""
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    name = choose_runtime(config, model_dir)
    chunk = config.inference_chunk(cuda=resolve_device(config.device).type == "cuda")
    return build_runtime(name, model_dir, config.device, chunk, config.max_length)


def score_records(model: ScoringRuntime, texts: Sequence[str]) -> list[dict[str, object]]:
    """Scores as plain records: the text, the model version, the top label, its probability, all six."""
    probabilities = model.predict_proba(texts)
    records: list[dict[str, object]] = []
    for text, row in zip(texts, probabilities, strict=True):
        top = int(row.argmax())
        record: dict[str, object] = {
            "text": text,
            "model_version": model.version,
            "runtime": model.runtime_name,
            "label": LABELS[top],
            "confidence": round(float(row[top]), 6),
        }
        record.update({name: round(float(p), 6) for name, p in zip(LABELS, row, strict=True)})
        records.append(record)
    return records
