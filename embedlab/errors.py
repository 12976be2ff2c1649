"""Exit codes of the ``embedlab`` command and the one-line message each kind of error gets.

| status | meaning |
| --- | --- |
| 0 | success |
| 1 | the job failed (missing corpus, damaged store, ...); the message says what and where |
| 2 | bad command-line usage: an option out of range, a value no config accepts, a wrong kind of path |
| 3 | the job finished, but some input records were rejected (listed in OUT/_rejects.jsonl) |
| 130 | interrupted; run the same command again to resume |

Commands build their config inside :func:`usage` (a ``ValueError`` there is bad usage, exit 2)
and run the job inside :func:`reported` (a library error is a failed job, exit 1; Ctrl-C is
130). Every message is one line on stderr starting ``embedlab: error:``; no traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REJECTS = 3
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad command-line usage found after parsing (exit 2)."""


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``embedlab: error: MESSAGE`` on stderr; return the exit to raise."""
    typer.echo(f"embedlab: error: {message}", err=True)
    return typer.Exit(code)


def job_errors() -> tuple[type[BaseException], ...]:
    """The library's errors that end a job with a message rather than a traceback (exit 1)."""
    from embedlab.beir import BeirError
    from embedlab.commitlog import LogError
    from embedlab.corpus import CorpusError
    from embedlab.encoder import ModelNotFoundError
    from embedlab.files import EnvironmentFault
    from embedlab.store import StoreError

    return (CorpusError, StoreError, LogError, ModelNotFoundError, BeirError, EnvironmentFault,
            FileNotFoundError, ValueError)


@contextmanager
def usage() -> Iterator[None]:
    """Build configs inside: a ``ValueError`` (a config refusing a value) is bad usage, exit 2."""
    try:
        yield
    except ValueError as e:
        raise fail(str(e), EXIT_USAGE) from None


@contextmanager
def reported(interrupted: str = "interrupted; run the same command again to resume") -> Iterator[None]:
    """Run a job inside: its errors become one line and exit 1; Ctrl-C prints ``interrupted``, 130."""
    try:
        yield
    except KeyboardInterrupt:
        raise fail(interrupted, EXIT_INTERRUPTED) from None
    except UsageError as e:
        raise fail(str(e), EXIT_USAGE) from None
    except Exception as e:
        if isinstance(e, job_errors()):
            raise fail(str(e)) from None
        raise


def print_result(result: Any, as_json: bool, rejects_path: Path) -> None:
    """Print a job's summary (or its JSON); exit 3, naming the rejects file, when records were rejected."""
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else result.summary())
    if not result.ok:
        typer.echo(f"embedlab: {result.rejected} input record(s) rejected; see {rejects_path}", err=True)
        raise typer.Exit(EXIT_REJECTS)
