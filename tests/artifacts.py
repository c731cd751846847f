"""Heavy test artifacts (full-size exports, checkpoints) built once per pytest run and shared by every worker.

pytest-xdist runs each worker in its own process, so a session fixture alone would export Swin-T or x4plus once
per worker. ``SharedArtifacts.get`` keys an artifact by what determines its bytes (model, weights sha256,
formats, precisions, calibration set, kvqe version), builds it under a file lock in a folder every worker of
this run sees, and hands back its path; the other workers wait for the lock and reuse it. The folder belongs to
this run (pytest's base temp, or its parent under xdist), so nothing is reused across runs, where the code may
have changed.

Artifacts are read-only to the tests: a test that must change one (tamper with a byte, add a file) copies it to
its own ``tmp_path`` first."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from filelock import FileLock
from support import cli

from kvqe.version import __version__


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SharedArtifacts:
    """Builds each keyed artifact once per pytest run, across xdist workers. Safe across processes (a file lock
    per artifact); within one process, fixtures call it one at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_run(cls, factory: pytest.TempPathFactory) -> SharedArtifacts:
        base = factory.getbasetemp()
        run_root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # gw0, gw1 share the parent
        return cls(run_root / "shared-artifacts")

    def get(self, name: str, key: Mapping[str, object], build: Callable[[Path], object]) -> Path:
        """The folder holding artifact ``name`` for ``key``; ``build(folder)`` fills a fresh folder the first time.
        A build that raises leaves nothing behind, and the next caller tries again."""
        record = {"name": name, "kvqe": __version__, **key}
        digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
        target = self.root / f"{name}-{digest}"
        done = target.with_name(target.name + ".json")  # written last, beside the folder: the build finished
        with FileLock(str(target) + ".lock"):
            if done.is_file():
                return target
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(target, ignore_errors=True)
            partial.mkdir()
            try:
                build(partial)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            partial.rename(target)
            done.write_text(json.dumps(record, sort_keys=True, default=str))
        return target

    def cli_export(self, name: str, key: Mapping[str, object], bundle: str, *args: str) -> tuple[Path, dict]:
        """``kvqe-export ARGS --out FOLDER/BUNDLE --json`` built once per run (see :meth:`get`): the bundle's path
        and the export's JSON summary."""
        def build(folder: Path) -> None:
            result = cli("kvqe-export", *args, "--out", str(folder / bundle), "--json", check_code=0)
            (folder / "summary.json").write_bytes(result.stdout)

        folder = self.get(name, key, build)
        (summary,) = (json.loads(line) for line in (folder / "summary.json").read_text().splitlines() if line.strip())
        return folder / bundle, summary
