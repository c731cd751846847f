"""Pipeline kinds by name: what a manifest ``pipeline`` entry's ``kind`` turns into at load and at export.

A bundle that runs several graphs (one per stage, see :mod:`kvqe.bundle`) names its kind in the manifest;
the loader makes one runner per stage and :func:`compose` asks the kind to join them into ONE runner, so
``Model`` and the tiler see one model. A kind's module registers itself with :func:`register`; the package
imports the kinds this kvqe ships.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kvqe.errors import BadInputError, BundleError
from kvqe.runtimes.base import Runner

Build = Callable[[Mapping[str, Any], Mapping[str, Runner]], Runner]  # (manifest entry, stage runners) -> runner
Describe = Callable[..., dict[str, Any]]  # export facts -> the manifest entry that ``Build`` reads back


@dataclass(frozen=True)
class PipelineKind:
    """A kind: its ``name`` (the manifest's ``kind``), its ``stages`` in run order, how to ``build`` its
    runner from the stage runners, and how to ``describe`` it in a manifest (prose included)."""

    name: str
    stages: tuple[str, ...]
    build: Build
    describe: Describe


_KINDS: dict[str, PipelineKind] = {}


def register(kind: PipelineKind) -> PipelineKind:
    """Make ``kind`` known by its name (a second registration of a name is a programming error)."""
    if kind.name in _KINDS and _KINDS[kind.name] != kind:
        raise ValueError(f"pipeline kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    return kind


def kinds() -> tuple[str, ...]:
    """The registered kind names, in registration order."""
    return tuple(_KINDS)


def compose(pipeline: Mapping[str, Any], runners: Mapping[str, Runner]) -> Runner:
    """The (not yet loaded) runner a manifest ``pipeline`` entry describes, over one runner per stage."""
    name = pipeline.get("kind")
    if name not in _KINDS:
        raise BundleError(f"unknown pipeline kind {name!r}; this kvqe runs {', '.join(_KINDS)}")
    return _KINDS[name].build(pipeline, runners)


def describe(kind: str, **facts: Any) -> dict[str, Any]:
    """The manifest ``pipeline`` entry of ``kind`` for what the exporter knows (``facts``)."""
    if kind not in _KINDS:
        raise BadInputError(f"unknown pipeline kind {kind!r}; choose {', '.join(_KINDS)}")
    return _KINDS[kind].describe(**facts)
