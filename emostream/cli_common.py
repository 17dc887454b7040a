"""What every command module shares: the Typer app, options built from Settings, and UsageError."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin

import typer
from pydantic import AwareDatetime, SecretStr

from emostream.settings import Settings, load_settings

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
    default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]  # pydantic types default_factory as maybe taking the data
    several = isinstance(default, list)  # ``data``: its sources, not a Python list's repr
    if several:
        default = ", ".join(map(str, default))
    return typer.Option(
        *(flags or (f"--{name.replace('_', '-')}",)),
        help=f"{field.description} (env EMOSTREAM_{name.upper()}; default {default})",
        show_default=False,
        metavar="<str>" if several else None,  # repeatable; typer would print <list[str]>
    )


def settings_from(params: dict[str, Any]) -> Settings:
    """Settings from a command's parameters: those named like a Settings field are flags for it."""
    return load_settings(**{name: value for name, value in params.items() if name in Settings.model_fields})


def settings_command(
    fields: Sequence[str], group: bool = False
) -> Callable[[Callable[[Settings], None]], Callable[..., None]]:
    """Make ``fn(settings)`` a command with one ``--flag`` per listed Settings field.

    Commands that only configure (``worker``, ``up``) then share one list of fields instead of repeating
    long parameter lists; Typer reads the built signature like any other. ``group``: ``fn`` is the
    callback of a command group (``review``), run only when no subcommand is given.
    """

    def wrap(fn: Callable[[Settings], None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def command(ctx: typer.Context | None = None, **flags: Any) -> None:
            if ctx is not None and ctx.invoked_subcommand is not None:
                return
            fn(load_settings(**flags))

        parameters = (
            [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)] if group else []
        )
        for name in fields:
            annotation: Any = Settings.model_fields[name].annotation  # a type or a typing form (a union)
            if get_origin(annotation) is Literal or annotation in (SecretStr, SecretStr | None, AwareDatetime):
                annotation = str  # pydantic parses it, and names the problem
            parameters.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[annotation | None, setting(name)],
                )
            )
        command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]  # read by typer
        del command.__wrapped__  # Typer must read the built signature, not fn's
        return command

    return wrap


Data = Annotated[list[str] | None, setting("data")]  # repeatable: --data A --data B
TextColumn = Annotated[str | None, setting("text_column")]
LabelColumn = Annotated[str | None, setting("label_column")]
Registry = Annotated[Path | None, setting("registry")]
Reports = Annotated[Path | None, setting("reports")]
Device = Annotated[str | None, setting("device")]
Seed = Annotated[int | None, setting("seed")]
MaxLength = Annotated[int | None, setting("max_length")]
InferenceBatch = Annotated[int | None, setting("inference_batch_size")]
Dsn = Annotated[str | None, setting("clickhouse_dsn")]
Home = Annotated[Path | None, setting("home")]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="model directory or registry version (e.g. v0002); default: the registry's current"),
]
