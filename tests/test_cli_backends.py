"""``--backend`` offers exactly what ``kvqe.load`` runs: auto and the runtimes that run bundle artifacts."""
from __future__ import annotations

from pathlib import Path

import click

from kvqe.cli import main
from kvqe.errors import BackendUnavailableError
from kvqe.runtimes.registry import KNOWN_BACKENDS, create_runner


def _runs_bundles(backend: str) -> bool:
    """Whether the registry builds runners of ``backend`` (a missing optional package still counts)."""
    try:
        create_runner(backend, Path("unused.onnx"))
    except BackendUnavailableError as exc:
        return "cannot run bundle artifacts" not in str(exc)
    return True


def test_every_command_offers_the_backends_the_registry_runs() -> None:
    runnable = {backend for backend in KNOWN_BACKENDS if _runs_bundles(backend)}
    assert "torch" not in runnable
    for name in ("score", "enhance", "eval"):
        command = main.commands[name]
        option = next(p for p in command.params if p.name == "backend")
        assert isinstance(option.type, click.Choice)
        assert option.type.choices[0] == "auto" and set(option.type.choices[1:]) == runnable, name
