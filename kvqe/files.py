"""File helpers: hashing and atomic writes (a failure never leaves a half-written output behind)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kvqe.errors import BadInputError


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFiles:
    """A model's files held in memory, so a runtime parses exactly the bytes that were checked.

    ``name`` is the main file's name (its suffix tells the format: ``.onnx``, ``.xml``, ``.engine``);
    ``companions`` maps the names of the files the main one refers to (an IR's ``.bin``, ONNX external
    data) to their bytes. A bundle hands out verified bytes (:meth:`kvqe.bundle.Bundle.read_verified`);
    :meth:`read` takes files from disk as they are (export-time use, nothing to verify against).
    """

    name: str
    main: bytes = field(repr=False)
    companions: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: str | os.PathLike[str], companions: tuple[str, ...] = ()) -> ModelFiles:
        """The file at ``path`` and the named companions beside it (an IR's ``.bin`` is always taken)."""
        path = Path(path)
        names = list(companions)
        if path.suffix == ".xml" and path.with_suffix(".bin").name not in names:
            names.append(path.with_suffix(".bin").name)
        try:
            return cls(path.name, path.read_bytes(), {n: (path.parent / n).read_bytes() for n in names})
        except OSError as exc:
            raise BadInputError(f"cannot read model file {exc.filename}: {exc.strerror}") from None


def check_output_path(path: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None) -> Path:
    """``path`` if a file can be written there, else BadInputError saying why.

    Checked before any work is done, so a bad output path costs nothing: it must not be a directory or
    the ``source`` itself, and a temporary file like the one the atomic write uses must be creatable in its
    folder (or, when the folder does not exist yet, in the nearest existing ancestor, where it will be made).
    """
    target = Path(path)
    try:
        if not target.name or target.name in (".", ".."):
            raise BadInputError(f"{path}: not a file name")
        if source is not None and _same_file(Path(source), target):
            raise BadInputError(f"{path}: the output must not overwrite the input")
        if target.is_dir():
            raise BadInputError(f"{path} is a directory; give a file name")
        existing = target.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise BadInputError(f"{path}: {existing} is not a directory")
        with tempfile.NamedTemporaryFile(prefix=_temp_prefix(target), suffix=target.suffix, dir=existing):
            pass
        if existing == target.parent:
            os.stat(target)  # the full name must be valid too (length), though it need not exist
    except FileNotFoundError as exc:
        if exc.filename is not None and Path(os.fsdecode(exc.filename)) == target:
            return target
        raise BadInputError(f"{path}: cannot write there: {exc.strerror}") from None
    except OSError as exc:
        raise BadInputError(f"{path}: cannot write there: {exc.strerror}") from None
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def _temp_prefix(target: Path) -> str:
    """The hidden temporary sibling's prefix, short enough that any valid target name leaves room for it."""
    return f".{target.stem[:64]}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _parent_folders(folder: Path) -> Iterator[None]:
    """Create ``folder`` and its missing ancestors; remove those it created (deepest first, while empty) when
    the block fails or is stopped (an error, a signal, KeyboardInterrupt), so a failed command leaves no
    empty folders behind."""
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for made in created:
            try:
                made.rmdir()
            except OSError:  # something else was written there meanwhile: keep it, and what holds it
                break
        raise


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds (else the
    folders made for it are removed too).

    ``suffix`` defaults to the target's own, so writers that pick a format from the name still work.
    """
    target = Path(path)
    with _parent_folders(target.parent):
        fd, tmp_name = tempfile.mkstemp(
            prefix=_temp_prefix(target), suffix=suffix if suffix is not None else target.suffix, dir=target.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; the output gets the usual permissions
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh staging directory beside ``path``; it becomes ``path`` only if the block succeeds (else
    the folders made for it are removed too).

    An existing directory at ``path`` is replaced as a whole (it is moved aside first, then removed).
    """
    target = Path(path)
    with _parent_folders(target.parent):
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging.", dir=target.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the bundle gets the usual permissions
        try:
            yield staging
            if target.exists():
                retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
                os.replace(target, retired / target.name)
                os.replace(staging, target)
                shutil.rmtree(retired, ignore_errors=True)
            else:
                os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
