"""What both command lines share: exit codes from errors, JSON lines on stdout, progress on stderr, and a
clean end on SIGTERM, SIGINT or a closed stdout."""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click
from tqdm import tqdm

from kvqe.errors import KvqeError
from kvqe.interrupt import abandoned
from kvqe.manifest import finite_or_null

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_CLOSED_STDOUT = 141  # 128 + SIGPIPE, what a shell reports for `yes | head`
# errors of a path the user named (a name too long, a folder where a file belongs, no permission): bad input
_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.EISDIR,
                          errno.ENOTDIR, errno.ELOOP, errno.EROFS, errno.EINVAL})


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread so that every ``finally`` (temporary outputs, child
    processes) runs before the process exits. A BaseException, so ``except Exception`` does not swallow it."""


def _raise_terminated(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


def emit(record: dict[str, Any], as_json: bool, text: str) -> None:
    """One result: a JSON object on its own line on stdout (a figure that is not finite, e.g. a correlation
    over constant scores, as null: JSON has no NaN), or human text, on stderr for a record of an error (so
    that stdout holds only results)."""
    if as_json:
        click.echo(json.dumps(finite_or_null(record), sort_keys=True, allow_nan=False))
    else:
        click.echo(text, err="error" in record)


def fail(message: str, code: int, as_json: bool, stdout_is_data: bool = False) -> NoReturn:
    """Report a fatal error (stderr, plus a JSON line in --json mode: on stdout, or on stderr when stdout
    carries the command's data, e.g. video frames for ``-o -``) and exit; at once, past the interpreter's
    shutdown, when a signal left a model call running (every cleanup has run by then)."""
    click.echo(f"error: {message}", err=True)
    if as_json:
        try:
            click.echo(json.dumps({"error": message}), err=stdout_is_data)
        except BrokenPipeError:
            _quiet_exit(code)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED) and abandoned():
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _quiet_exit(code: int) -> NoReturn:
    """Exit without writing to a stdout whose reader has gone (Python would complain at shutdown)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an error raised while handling one source or command."""
    if isinstance(exc, KvqeError):
        return exc.exit_code
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS:
        return EXIT_BAD_INPUT
    return EXIT_INTERNAL


def describe(exc: BaseException) -> str:
    """A one-line message for an error: a KvqeError's own, a path error's path and reason, else an
    internal error with a hint to get the traceback."""
    if isinstance(exc, KvqeError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in _PATH_ERRNOS:
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    if os.environ.get("KVQE_DEBUG"):
        traceback.print_exception(exc)
    return f"internal error: {type(exc).__name__}: {exc} (set KVQE_DEBUG=1 for a traceback)"


def handle_errors(command: F) -> F:
    """Map errors to exit codes and plain messages (no traceback unless KVQE_DEBUG is set); SIGTERM and
    SIGINT end the command after its cleanups ran; a closed stdout ends it quietly."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        data_out = kwargs.get("output_path") == "-"  # `kvqe enhance -o -`: stdout is the video stream
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            _quiet_exit(EXIT_CLOSED_STDOUT)
        except Terminated:
            fail("terminated", EXIT_TERMINATED, as_json, data_out)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED, as_json, data_out)
        except Exception as exc:  # noqa: BLE001 (every error gets a plain message and its exit code)
            fail(describe(exc), exit_code(exc), as_json, data_out)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def progress_bar(total: int | None, description: str) -> tqdm:
    """A progress bar on stderr that appears only for work longer than a second."""
    return tqdm(total=total, desc=description, file=sys.stderr, delay=1.0, leave=False, dynamic_ncols=True)
