"""The model layer's settings: how texts are tokenized and which runtime scores them.

Each field is declared here once, with its default, bounds and help text; ``emostream.settings.Settings``
inherits them (so ``EMOSTREAM_DEVICE`` and ``--device`` set this field), and the CLI hands the runtime a
``RuntimeConfig`` rather than the whole settings object.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RuntimeName = Literal["auto", "torch-fp32", "torch-bf16", "onnx-int8", "onnx-fp32", "benchmark-fixed"]


class TokenLimit(BaseModel):
    """The longest input, in tokens: the same for training a version and for serving it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: int = Field(128, gt=8, description="maximum tokens per tweet (longer ones are truncated)")


class RuntimeConfig(TokenLimit):
    """Where and how a model version scores texts (``load_runtime``)."""

    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="torch device for inference")
    inference_batch_size: int = Field(
        0, ge=0, description="tweets the model runs at once (length-sorted chunks); 0: 16 on a CPU, 256 on a GPU"
    )
    runtime: RuntimeName = Field(
        "auto",
        description="model runtime; auto: the fastest one the version's serving check accepted. benchmark-fixed: "
        "no model, fixed probabilities, for measuring the stream machinery (benchmarks/throughput.py), never "
        "for serving (its rows record vNNNN+benchmark-fixed as their version)",
    )
    torch_threads: int = Field(0, ge=0, description="threads for torch and ONNX Runtime; 0: torch's default")

    def inference_chunk(self, cuda: bool) -> int:
        """Texts per forward pass: the configured size, else 256 on a GPU and 16 on a CPU (measured best)."""
        return self.inference_batch_size or (256 if cuda else 16)
