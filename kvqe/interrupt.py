"""Model calls a signal can end at once: run on a worker thread while the main thread waits, so a SIGTERM or
SIGINT handler runs within moments instead of after the tile in progress (seconds to tens of seconds on a
loaded machine: Python runs signal handlers only between bytecodes of the main thread)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
THREAD_NAME = "kvqe-inference"
_POLL_S = 0.1  # the longest a signal waits to be handled, should the wait itself not be interrupted


def interruptible(call: Callable[[], T]) -> T:
    """``call()``, run on a daemon worker when called from the main thread (elsewhere, directly). An exception
    raised in the main thread meanwhile (a signal handler's, KeyboardInterrupt) propagates at once; the
    worker is left to finish on its own (see :func:`abandoned`)."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    done = threading.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting thread)
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=work, name=THREAD_NAME, daemon=True).start()
    while not done.wait(_POLL_S):
        pass
    if failure:
        raise failure[0]
    return outcome[0]


def abandoned() -> bool:
    """Whether a model call left behind by an interruption still runs (the process should then end without
    the interpreter's shutdown, which would tear the runtime down under it)."""
    return any(thread.name == THREAD_NAME and thread.is_alive() for thread in threading.enumerate())
