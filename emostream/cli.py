"""The ``emostream`` command line. Each command is a thin shell over the library: parse, call, render.

Start-up stays light (``--help`` well under half a second): command modules import torch, datasets,
Faust and clickhouse-connect inside the commands that use them, and ``main`` recognises user errors
by the modules that are already loaded instead of importing them to name their exceptions.
"""

from __future__ import annotations

import sys

from rich.text import Text

from emostream import (  # noqa: F401  (they register the commands)
    loop_commands,
    streaming_commands,
    team_commands,
    training_commands,
)
from emostream.cli_common import UsageError, app
from emostream.console import err, literal

# Exceptions that mean "what was asked for cannot be done": one line on stderr, exit 2, no traceback.
USER_ERRORS = {  # module: (exception, what to put before its message)
    "emostream.trainer.data": ("DataError", ""),
    "emostream.model.registry": ("RegistryError", ""),
    "emostream.stream.discovery": ("NoBrokerError", ""),
    "emostream.stream.clickhouse.sql": ("SqlError", "ClickHouse: "),
    "emostream.stream.clickhouse.ddl": ("SchemaError", ""),
    "emostream.stream.clickhouse.trends": ("TrendsError", ""),
    "emostream.trainer.retrain": ("RetrainError", ""),
    "emostream.stream.review.simulate": ("SimulationError", ""),
    "emostream.stream.web.reviewers": ("ReviewerError", ""),
    "emostream.stream.kafka.faust_internals": ("FaustInternalsMissing", ""),
}


def user_error_message(exc: BaseException) -> str | None:
    """The one line to print if ``exc`` is a user error from a module already loaded, else None."""
    if isinstance(exc, UsageError):
        return str(exc)
    for module, (name, prefix) in USER_ERRORS.items():
        if module in sys.modules and isinstance(exc, getattr(sys.modules[module], name)):
            return f"{prefix}{exc}"
    return None


def main() -> None:
    """Entry point: user errors become one clear line on stderr and exit code 2, never a traceback."""
    try:
        app()
    except Exception as exc:
        from pydantic import ValidationError

        kafka_errors = sys.modules.get("aiokafka.errors")
        if kafka_errors is not None and isinstance(exc, kafka_errors.KafkaConnectionError):
            message = f"cannot reach Kafka: {exc} (check EMOSTREAM_KAFKA_BOOTSTRAP)"
        elif isinstance(exc, ValidationError):
            from emostream.schemas import describe_errors

            message = f"invalid setting: {describe_errors(exc)}"
        elif (user_message := user_error_message(exc)) is not None:
            message = user_message
        else:
            raise
        err.print(Text.assemble(("error:", "red"), " ", literal(message)))
        sys.exit(2)
