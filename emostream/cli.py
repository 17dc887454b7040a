"""The ``emostream`` command line. Each command is a thin shell over the library: parse, call, render."""

from __future__ import annotations

import sys

from emostream import streaming_commands, training_commands  # noqa: F401  (they register the commands)
from emostream.cli_common import UsageError, app
from emostream.console import err


def main() -> None:
    """Entry point: user errors become one clear line on stderr and exit code 2, never a traceback."""
    from pydantic import ValidationError

    from schemas import describe_errors
    from trainer.data import DataError
    from trainer.registry import RegistryError

    try:
        app()
    except (DataError, RegistryError, UsageError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except ValidationError as exc:
        err.print(f"[red]error:[/red] invalid setting: {describe_errors(exc)}", highlight=False)
        sys.exit(2)
