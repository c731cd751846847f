"""The one Runner interface every backend implements (Polygraphy spirit: load, metadata, infer, close).

A runner takes and returns named tensors: ``infer({input name: array}) -> {output name: array}``, with
:meth:`Runner.inputs` / :meth:`Runner.outputs` describing them. :class:`Runner` does the checks every
backend needs (loaded state, every input fed and no other, dtype, rank, fixed dimensions), so a backend
only implements ``_load``, ``_input_specs``, ``_output_specs``, ``_infer`` and ``_close``.
:meth:`Runner.run_single` is the convenience for single-input, single-output models, built on ``infer``.
:class:`Pool` hands each concurrent caller its own instance of a backend's per-call state (an inference
request, an execution context), which is how runners whose engines are not thread-safe per request
become safe to share.
"""
from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

import numpy as np

from kvqe.errors import BadInputError, ModelClosedError
from kvqe.files import ModelFiles


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input or output; ``None`` marks a dynamic dimension."""

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
    """A loaded model on one backend: ``load()``, ``inputs()``, ``outputs()``, ``infer(feeds)``, ``close()``.

    ``infer`` takes every input by name and returns every output by name; :meth:`run_single` feeds the sole
    input of a single-input, single-output model and returns its sole output.

    Threads: one loaded runner may be shared by many threads. ``infer``, ``run_single``, ``inputs`` and
    ``outputs`` may be called concurrently, and each call returns what it would return alone; every backend
    guarantees this (its class docstring says how). ``load()`` and ``close()`` are not to race with
    anything: load before sharing the runner, close after the last call has returned.

    Memory: a runner made from a model's bytes (:class:`kvqe.files.ModelFiles`, what a bundle hands out)
    drops them once ``load()`` has succeeded, so a big model is not held twice (the bytes and the
    backend's parsed copy). Such a runner loads once: ``load()`` after ``close()`` raises ModelClosedError
    ("closed; load the bundle again"), as does any call after ``close()``. A runner made from a path reads
    the file again at each load.
    """

    name: str = "runner"
    model_attribute: str | None = None  # the attribute holding the model (ModelFiles or a path), if any

    def __init__(self) -> None:
        self._loaded = False
        self._spent = False  # the model's bytes were dropped after a load: it cannot load again
        self._closed = False  # closed after a load (and not loaded again)
        self._specs: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None = None  # cached once loaded

    def load(self) -> Self:
        if not self._loaded:
            if self._spent:
                raise ModelClosedError(f"{self.name}: closed; load the bundle again (a runner made from a model's "
                                       "bytes drops them once loaded, so it cannot load a second time)")
            self._load()
            self._loaded, self._closed = True, False
            self._spent = self._drop_model_bytes()
        return self

    def inputs(self) -> tuple[TensorSpec, ...]:
        """Every input, in the model's order."""
        return self._io()[0]

    def outputs(self) -> tuple[TensorSpec, ...]:
        """Every output, in the model's order (``infer`` returns them under these names)."""
        return self._io()[1]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once: ``feeds`` maps every input name to an array matching :meth:`inputs` (dtype, rank, fixed
        dims); returns every output by name."""
        return self._infer(self._checked(feeds))

    def run_single(self, batch: np.ndarray) -> np.ndarray:
        """The sole output for ``batch`` fed to the sole input (single-input, single-output models)."""
        inputs, outputs = self._io()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BadInputError(
                f"{self.name}: run_single() runs single-input, single-output models; this one has inputs "
                f"{', '.join(s.name for s in inputs)} and outputs {', '.join(s.name for s in outputs)}: use infer()")
        return self.infer({inputs[0].name: batch})[outputs[0].name]

    def _io(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        self._require_loaded()
        if self._specs is None:  # a race computes the same specs twice, harmlessly
            self._specs = (tuple(self._input_specs()), tuple(self._output_specs()))
        return self._specs

    def _checked(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``feeds`` as contiguous arrays after the loaded-state, name, dtype, rank and fixed-dimension checks."""
        specs = self.inputs()
        unknown = sorted(set(feeds) - {spec.name for spec in specs})
        missing = [spec.name for spec in specs if spec.name not in feeds]
        if unknown or missing:
            raise BadInputError(f"{self.name}: inputs are {', '.join(s.name for s in specs)}; "
                                + (f"missing {', '.join(missing)}" if missing else "")
                                + ("; " if missing and unknown else "")
                                + (f"unknown {', '.join(unknown)}" if unknown else ""))
        checked = {}
        for spec in specs:
            value = feeds[spec.name]
            if value.dtype != spec.dtype:
                raise BadInputError(f"{self.name}: input {spec.name} dtype {value.dtype} != expected {spec.dtype}")
            if value.ndim != len(spec.shape) or any(
                want is not None and got != want for got, want in zip(value.shape, spec.shape)
            ):
                raise BadInputError(f"{self.name}: input {spec.name} shape {value.shape} does not fit {spec.shape}")
            checked[spec.name] = np.ascontiguousarray(value)
        return checked

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded, self._closed = False, True
            self._specs = None

    def __enter__(self) -> Self:
        return self.load()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require_loaded(self) -> None:
        if self._closed:
            raise ModelClosedError(f"{self.name}: closed; load the bundle again to use it")
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
    def _input_specs(self) -> tuple[TensorSpec, ...]: ...

    @abc.abstractmethod
    def _output_specs(self) -> tuple[TensorSpec, ...]: ...

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once on checked, contiguous ``feeds`` (every input, by name); every output by name."""

    @abc.abstractmethod
    def _close(self) -> None: ...
