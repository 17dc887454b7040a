"""What every command module shares: the Typer app, options built from Settings, and UsageError."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emostream.settings import Settings

app = typer.Typer(
    name="emostream",
    help="Real-time emotion scores for social-media streams, and the training workflow behind them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class UsageError(Exception):
    """A user-facing problem with what was asked for; printed without a traceback, exit 2."""


def setting(name: str, *flags: str) -> Any:
    """A CLI option for a :class:`Settings` field: same help, env variable and default everywhere."""
    field = Settings.model_fields[name]
    default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    return typer.Option(
        *(flags or (f"--{name.replace('_', '-')}",)),
        help=f"{field.description} (env EMOSTREAM_{name.upper()}; default {default})",
        show_default=False,
    )


Data = Annotated[str | None, setting("data")]
TextColumn = Annotated[str | None, setting("text_column")]
LabelColumn = Annotated[str | None, setting("label_column")]
Registry = Annotated[Path | None, setting("registry")]
Reports = Annotated[Path | None, setting("reports")]
Device = Annotated[str | None, setting("device")]
Seed = Annotated[int | None, setting("seed")]
MaxLength = Annotated[int | None, setting("max_length")]
InferenceBatch = Annotated[int | None, setting("inference_batch_size")]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="model directory or registry version (e.g. v0002); default: the registry's current"),
]
