"""Error types. Every error a user can cause derives from :class:`KvqeError`.

Each class carries the CLI exit code of INTERFACE.md, so the command line maps errors to exit codes in
one place.
"""
from __future__ import annotations


class KvqeError(Exception):
    """Base of every user-facing kvqe error; the message says what was wrong and what to do."""

    exit_code: int = 1


class BadInputError(KvqeError):
    """A source, image, argument or file the user gave cannot be used (exit 2)."""

    exit_code = 2


class UnscorableError(BadInputError):
    """An input below the smallest a bundle can score (frames too small, a video too short) (exit 2);
    ``kvqe gate`` rejects it with reason ``unscorable``. ``width`` and ``height``: its frame size, 0 if unknown."""

    def __init__(self, message: str, width: int = 0, height: int = 0) -> None:
        super().__init__(message)
        self.width, self.height = width, height


class BundleError(KvqeError):
    """A bundle is missing, malformed, tampered with, or lacks the requested artifact (exit 2)."""

    exit_code = 2


class ModelClosedError(KvqeError):
    """A model (or its runner) was used after ``close()`` (exit 2): load the bundle again."""

    exit_code = 2


class BackendUnavailableError(KvqeError):
    """A backend, optional dependency or device is not available on this machine (exit 4)."""

    exit_code = 4


class AccuracyGateError(KvqeError):
    """An artifact missed one of its accuracy gates (exit 3)."""

    exit_code = 3


class ExportValidationError(KvqeError):
    """An exported graph disagrees with its PyTorch reference; the message lists every failure (exit 1)."""

    exit_code = 1


def missing_extra(module: str, extra: str) -> BackendUnavailableError:
    """The error for an optional dependency that is not installed."""
    return BackendUnavailableError(
        f"{module} is not installed; install it with: pip install 'kvqe[{extra}]'"
    )
