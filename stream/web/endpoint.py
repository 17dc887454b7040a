"""The client side of the worker's web endpoint: find it from the data directory, ask it SQL, fetch the labels.

In the embedded mode one process owns the chDB directory, so `emostream sql`, the demo and the tests
send their statements to that process. They find it through the files it writes beside the directory:
the endpoint's address, and the credential (mode 0600) without which it answers nothing.

The reviewers' labels (the retraining snapshot, `emostream labels`) are emostream's own statement, not
user SQL: they come through an operator-only route (:data:`LABELS_ROUTE`) that runs
``TRAINING_LABELS_WITH_IDS`` on a trusted ClickHouse client, free of user SQL's row and byte limits, or,
where no process serves the directory (or ClickHouse is a server), through such a client of our own
on the writer's DSN: :func:`export_training_labels` and :func:`count_training_labels` serve both sides.
The snapshot is Parquet, written by ClickHouse itself: every string round-trips (any character,
line separators and NUL included), and it is read with pyarrow, batch by batch.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emostream.stream.clickhouse.dsn import ClickHouseDsn
from emostream.stream.clickhouse.sql import SqlError, SqlResult
from emostream.stream.discovery import endpoint_file, read_state
from emostream.stream.web.auth import read_token, token_file

LABELS_ROUTE = "/labels"  # GET: the training labels snapshot (Parquet); operator's credential only
LABELS_COUNT_ROUTE = "/labels/count"  # GET: {"labels": n}, the rows that snapshot would have
PARQUET_TYPE = "application/vnd.apache.parquet"
CHUNK = 1 << 20  # bytes: what a download or a copy holds in memory at a time


@dataclass(frozen=True)
class Endpoint:
    """A running worker's web endpoint, as a client reaches it: its base URL and the operator's token."""

    url: str
    token: str

    @classmethod
    def find(cls, data_dir: Path) -> Endpoint | None:
        """The live endpoint serving this chDB directory, or None when no process serves it."""
        state = read_state(endpoint_file(data_dir))
        if not state:
            return None
        token = read_token(token_file(endpoint_file(data_dir)))
        if token is None:
            raise SqlError(f"{token_file(endpoint_file(data_dir))}: the endpoint's credential is missing or unreadable")
        return cls(str(state["url"]), token)

    def sql(self, statement: str, timeout: float = 120.0) -> SqlResult:
        """Run a statement as user SQL there; a refusal, or no answer within ``timeout`` s, raises ``SqlError``."""
        request = urllib.request.Request(
            f"{self.url}/sql",
            data=statement.encode(),
            method="POST",
            headers={**self._auth(), "Content-Type": "text/plain; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return SqlResult.from_json_compact(response.read())
        except urllib.error.HTTPError as exc:
            raise SqlError(_error_of(exc)) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise SqlError(f"the endpoint {self.url} did not answer: {getattr(exc, 'reason', exc)}") from None

    def training_labels(self, path: Path, timeout: float = 600.0) -> int:
        """Download the labels snapshot (Parquet) to ``path``, streamed to disk; returns its rows.

        The file appears complete or not at all: it is written beside ``path`` and renamed once its
        length matches what the endpoint announced and it reads as Parquet.
        """
        request = urllib.request.Request(f"{self.url}{LABELS_ROUTE}", headers=self._auth())
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, partial.open("wb") as handle:
                shutil.copyfileobj(response, handle, CHUNK)
                announced = response.headers.get("Content-Length")
            size = partial.stat().st_size
            if announced is not None and size != int(announced):
                raise SqlError(f"the endpoint {self.url} sent {size:,} of {int(announced):,} bytes of the labels")
            rows = parquet_rows(partial)
            os.replace(partial, path)
            return rows
        except urllib.error.HTTPError as exc:
            raise SqlError(_error_of(exc)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise SqlError(f"the endpoint {self.url} did not answer: {getattr(exc, 'reason', exc)}") from None
        finally:
            partial.unlink(missing_ok=True)

    def count_training_labels(self, timeout: float = 120.0) -> int:
        """The rows the labels snapshot would have now; ``SqlError`` on a refusal or an answer that is no count."""
        request = urllib.request.Request(f"{self.url}{LABELS_COUNT_ROUTE}", headers=self._auth())
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(json.loads(response.read())["labels"])
        except urllib.error.HTTPError as exc:
            raise SqlError(_error_of(exc)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise SqlError(f"the endpoint {self.url} did not answer: {getattr(exc, 'reason', exc)}") from None
        except (ValueError, KeyError, TypeError):
            raise SqlError(f"the endpoint {self.url} answered something other than a count of labels") from None

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        """Call one of the endpoint's JSON routes with the operator's credential; its answer, decoded.
        A refusal (its ``error``) or no answer raises ``SqlError``."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={**self._auth(), **({"Content-Type": "application/json"} if body is not None else {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise SqlError(_error_of(exc)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise SqlError(f"the endpoint {self.url} did not answer: {getattr(exc, 'reason', exc)}") from None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"


def trusted_client(dsn: ClickHouseDsn) -> Any:
    """A ClickHouse client for emostream's own statements on the writer's DSN: none of user SQL's limits.

    Blocking; one per caller and thread (a chDB handle of its own on an engine this process has open,
    or its own HTTP session), closed by the caller.
    """
    import clickhouse_connect

    try:
        return clickhouse_connect.get_client(dsn=dsn.url)
    except Exception as exc:
        raise SqlError(str(exc).strip()) from None


def export_training_labels(dsn: ClickHouseDsn, path: Path) -> int:
    """``TRAINING_LABELS_WITH_IDS`` as Parquet, written by ClickHouse to ``path``; returns its rows.

    chDB writes the file itself (``INTO OUTFILE``: nothing held in memory); from a server the result is
    streamed to the file in chunks. Either way the file is checked to be whole Parquet before it counts.
    """
    from clickhouse_connect.driver.binding import format_query_value

    from emostream.stream.clickhouse.labels import TRAINING_LABELS_WITH_IDS

    statement = TRAINING_LABELS_WITH_IDS.strip().rstrip(";")
    path = path.resolve()  # the engine's working directory is not necessarily ours
    client = trusted_client(dsn)
    try:
        if dsn.embedded:
            client.command(f"{statement}\nINTO OUTFILE {format_query_value(str(path))} TRUNCATE FORMAT Parquet")
        else:
            stream = client.raw_stream(statement, fmt="Parquet")
            try:
                with path.open("wb") as handle:
                    while chunk := stream.read(CHUNK):
                        handle.write(chunk)
            finally:
                stream.close()
    except OSError:
        raise
    except Exception as exc:
        raise SqlError(str(exc).strip()) from None
    finally:
        client.close()
    return parquet_rows(path)


def count_training_labels(dsn: ClickHouseDsn) -> int:
    """The rows :func:`export_training_labels` would write now (``--watch`` looks at this)."""
    from emostream.stream.clickhouse.labels import TRAINING_LABELS_WITH_IDS

    client = trusted_client(dsn)
    try:
        return int(client.command(f"SELECT count() FROM ({TRAINING_LABELS_WITH_IDS.strip().rstrip(';')})"))
    except Exception as exc:
        raise SqlError(str(exc).strip()) from None
    finally:
        client.close()


def parquet_rows(path: Path) -> int:
    """The rows of a whole Parquet file (its footer), or :class:`SqlError` for a cut or foreign one."""
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except OSError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid: no footer, a truncated file
        raise SqlError(f"{path}: the labels snapshot is not whole Parquet ({exc})") from None
