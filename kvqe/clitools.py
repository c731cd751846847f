"""What both command lines share: exit codes from errors, JSON lines on stdout, progress on stderr."""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click
from tqdm import tqdm

from kvqe.errors import KvqeError

F = TypeVar("F", bound=Callable[..., Any])


def emit(record: dict[str, Any], as_json: bool, text: str) -> None:
    """One result: a JSON object on its own line, or human text."""
    click.echo(json.dumps(record, sort_keys=True) if as_json else text)


def fail(message: str, code: int, as_json: bool) -> None:
    """Report a fatal error (stderr, plus a JSON line on stdout in --json mode) and exit."""
    click.echo(f"error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message}))
    sys.exit(code)


def handle_errors(command: F) -> F:
    """Map KvqeError to its exit code and a plain message; anything else exits 1 without a traceback
    unless KVQE_DEBUG is set."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return command(*args, **kwargs)
        except KvqeError as exc:
            fail(str(exc), exc.exit_code, as_json)
        except KeyboardInterrupt:
            fail("interrupted", 130, as_json)
        except Exception as exc:  # noqa: BLE001 (an internal error: say so plainly, exit 1)
            if os.environ.get("KVQE_DEBUG"):
                traceback.print_exc()
            fail(f"internal error: {type(exc).__name__}: {exc} (set KVQE_DEBUG=1 for a traceback)", 1, as_json)

    return wrapper  # type: ignore[return-value]


def progress_bar(total: int | None, description: str) -> tqdm:
    """A progress bar on stderr that appears only for work longer than a second."""
    return tqdm(total=total, desc=description, file=sys.stderr, delay=1.0, leave=False, dynamic_ncols=True)
