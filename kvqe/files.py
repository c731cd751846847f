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
    """``path`` if a file can be written there (atomically, beside it), else BadInputError saying why.

    Checked before any work is done, so a bad output path costs nothing: the name must fit the file
    system, must not be a directory or the ``source`` itself, and its folder must exist (or be creatable
    under an existing writable folder).
    """
    target = Path(path)
    if not target.name or target.name in (".", ".."):
        raise BadInputError(f"{path}: not a file name")
    if source is not None and _same_file(Path(source), target):
        raise BadInputError(f"{path}: the output must not overwrite the input")
    if target.is_dir():
        raise BadInputError(f"{path} is a directory; give a file name")
    parent = target.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BadInputError(f"{path}: {existing} is not a directory")
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    # the temporary sibling is ".<stem>.<8 random chars><suffix>": it must fit too
    for part in (*target.relative_to(existing).parts, f".{target.stem}.XXXXXXXX{target.suffix}"):
        if len(os.fsencode(part)) > limit:
            raise BadInputError(f"{path}: the name {part[:40]}... is longer than this file system allows "
                                f"({limit} bytes)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BadInputError(f"{path}: cannot write in {existing} (permission denied)")
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    ``suffix`` defaults to the target's own, so writers that pick a format from the name still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=suffix if suffix is not None else target.suffix, dir=target.parent
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
    """Yield a fresh staging directory beside ``path``; it becomes ``path`` only if the block succeeds.

    An existing directory at ``path`` is replaced as a whole (it is moved aside first, then removed).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
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
