"""The one Runner interface every backend implements (Polygraphy spirit: load, metadata, run, close).

:class:`Runner` does the checks every backend needs (loaded state, dtype, rank, fixed dimensions), so a
backend only implements ``_load``, ``_input_metadata``, ``_run`` and ``_close``. :class:`Pool` hands each
concurrent caller its own instance of a backend's per-call state (an inference request, an execution
context), which is how runners whose engines are not thread-safe per request become safe to share.
"""
from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

import numpy as np

from kvqe.errors import BadInputError
from kvqe.files import ModelFiles


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input; ``None`` marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


T = TypeVar("T")


class Pool(Generic[T]):
    """Instances of a backend's per-call state, made on demand: each caller takes one for itself and gives
    it back, so no instance is ever used by two threads at once. The pool grows to the peak number of
    concurrent callers and never shrinks (idle instances are reused); :meth:`drain` hands every instance
    made back to the owner to release."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._idle: list[T] = []
        self._made: list[T] = []

    def add(self, item: T) -> None:
        """Put an instance made elsewhere (e.g. at load time, so load errors surface there) in the pool."""
        with self._lock:
            self._made.append(item)
            self._idle.append(item)

    @contextlib.contextmanager
    def take(self) -> Iterator[T]:
        """An idle instance, or a new one when every instance is busy; returned to the pool afterwards."""
        with self._lock:
            item = self._idle.pop() if self._idle else None
        if item is None:
            item = self._make()  # outside the lock: making one can be slow, and others may return theirs
            with self._lock:
                self._made.append(item)
        try:
            yield item
        finally:
            with self._lock:
                self._idle.append(item)

    def drain(self) -> list[T]:
        """Every instance made, forgotten by the pool (the caller releases them; none may be in use)."""
        with self._lock:
            made, self._made, self._idle = self._made, [], []
        return made


class Runner(abc.ABC):
    """A loaded model on one backend: ``load()``, ``input_metadata()``, ``run(batch)``, ``close()``.

    Multi-input graphs (SinSR's tile graphs: features, GroupNorm statistics, kept-region mask) run through
    :meth:`run_many` (inputs by name, every output in graph order); ``input_metadata`` and ``run`` describe
    and feed the first input only. Backends without multi-input support leave ``_run_many`` unimplemented.

    Threads: one loaded runner may be shared by many threads. ``run``, ``run_many`` and ``input_metadata``
    may be called concurrently, and each call returns what it would return alone; every backend guarantees
    this (its class docstring says how). ``load()`` and ``close()`` are not to race with anything: load
    before sharing the runner, close after the last call has returned.

    Memory: a runner made from a model's bytes (:class:`kvqe.files.ModelFiles`, what a bundle hands out)
    drops them once ``load()`` has succeeded, so a big model is not held twice (the bytes and the
    backend's parsed copy). Such a runner loads once: ``load()`` after ``close()`` raises RuntimeError
    ("closed; load the bundle again"). A runner made from a path reads the file again at each load.
    """

    name: str = "runner"
    model_attribute: str | None = None  # the attribute holding the model (ModelFiles or a path), if any

    def __init__(self) -> None:
        self._loaded = False
        self._spent = False  # the model's bytes were dropped after a load: it cannot load again

    def load(self) -> Self:
        if not self._loaded:
            if self._spent:
                raise RuntimeError(f"{self.name}: closed; load the bundle again (a runner made from a model's "
                                   "bytes drops them once loaded, so it cannot load a second time)")
            self._load()
            self._loaded = True
            self._spent = self._drop_model_bytes()
        return self

    def input_metadata(self) -> TensorSpec:
        self._require_loaded()
        return self._input_metadata()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; the input must match :meth:`input_metadata` (dtype, rank, fixed dims)."""
        return self._run(self._checked(batch))

    def run_many(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run a multi-input graph: ``feeds`` maps every input name to a float32 array; returns every output,
        in the graph's order. Dtypes and ranks are the caller's contract (no per-input checks here)."""
        self._require_loaded()
        return self._run_many({name: np.ascontiguousarray(value) for name, value in feeds.items()})

    def _run_many(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise BadInputError(f"{self.name}: this backend runs single-input graphs only (no run_many)")

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as a contiguous array after the loaded-state, dtype, rank and fixed-dimension checks."""
        self._require_loaded()
        spec = self._input_metadata()
        if batch.dtype != spec.dtype:
            raise BadInputError(f"{self.name}: input dtype {batch.dtype} != expected {spec.dtype}")
        if batch.ndim != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(batch.shape, spec.shape)
        ):
            raise BadInputError(f"{self.name}: input shape {batch.shape} does not fit {spec.shape}")
        return np.ascontiguousarray(batch)

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> Self:
        return self.load()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require_loaded(self) -> None:
        if not self._loaded:
            raise RuntimeError(f"{self.name}: call load() before using the runner")

    def _drop_model_bytes(self) -> bool:
        """After a successful ``_load``: forget the model if :attr:`model_attribute` holds its bytes (the
        attribute becomes None) and return True, as the runner cannot load again; a path is kept."""
        if self.model_attribute is None or not isinstance(getattr(self, self.model_attribute), ModelFiles):
            return False
        setattr(self, self.model_attribute, None)
        return True

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _input_metadata(self) -> TensorSpec: ...

    @abc.abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
