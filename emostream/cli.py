"""The ``emostream`` command line. Each command is a thin shell over the library: parse, call, render."""

from __future__ import annotations

import sys

from emostream import streaming_commands, training_commands  # noqa: F401  (they register the commands)
from emostream.cli_common import UsageError, app
from emostream.console import err


def main() -> None:
    """Entry point: user errors become one clear line on stderr and exit code 2, never a traceback."""
    from aiokafka.errors import KafkaConnectionError
    from pydantic import ValidationError

    from model.registry import RegistryError
    from schemas import describe_errors
    from stream.worker import NoBrokerError
    from trainer.data import DataError

    try:
        app()
    except KafkaConnectionError as exc:
        err.print(f"[red]error:[/red] cannot reach Kafka: {exc} (check EMOSTREAM_KAFKA_BOOTSTRAP)", highlight=False)
        sys.exit(2)
    except (DataError, RegistryError, UsageError, NoBrokerError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except ValidationError as exc:
        err.print(f"[red]error:[/red] invalid setting: {describe_errors(exc)}", highlight=False)
        sys.exit(2)
