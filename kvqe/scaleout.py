"""Run one job per source on Ray: Ray Data reads the list of sources, a pool of actors each loads the bundle
once, and each source's record streams back to the caller; a source that fails becomes a record with
``error`` instead of failing the job.

The job itself (what a source becomes) is a picklable function ``work(model, source) -> record`` the caller
gives, and so is ``load`` (``kvqe.load``): this module knows neither models nor commands. Ray is an optional
dependency, imported only when a job runs. Not for use by several threads at once: a process holds one Ray
connection.
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kvqe.errors import BackendUnavailableError, KvqeError
from kvqe.files import atomic_output_file

INSTALL_HINT = "pip install 'kvqe[ray]'"
Work = Callable[[Any, str], dict[str, Any]]


def require_ray() -> Any:
    """The ``ray`` module with Ray Data; BackendUnavailableError (exit 4) saying how to install it if absent."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError as exc:
        raise BackendUnavailableError(f"--engine ray needs Ray, which is not installed ({exc}): "
                                      f"{INSTALL_HINT}") from None
    return ray


class _Worker:
    """One actor: loads the bundle once, then runs ``work`` on each batch of sources."""

    def __init__(self, load: Callable[..., Any], bundle: str, options: dict[str, Any], work: Work) -> None:
        self.model = load(bundle, **options)
        self.work = work

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        records = []
        for source in batch["source"]:
            try:
                record = self.work(self.model, str(source))
            except KvqeError as exc:
                record = {"source": str(source), "error": str(exc), "exit_code": exc.exit_code}
            except Exception as exc:  # noqa: BLE001 (one bad source must not stop the others)
                record = {"source": str(source), "error": f"{type(exc).__name__}: {exc}", "exit_code": 1}
            records.append(json.dumps(record, allow_nan=True))
        return {"record": records}


def run(sources: list[str], work: Work, *, load: Callable[..., Any], bundle: str, options: dict[str, Any],
        actors: int = 2, address: str | None = None, retries: int = 3) -> Iterator[dict[str, Any]]:
    """Each source's record, in the order they finish: ``work(model, source)`` on a pool of ``actors`` Ray
    actors, each with ``load(bundle, **options)`` loaded once. Connects to ``address`` (a Ray cluster), else
    starts a local Ray bounded to ``actors`` CPUs and shuts it down at the end. A failed task or a lost actor
    is retried ``retries`` times; an error inside ``work`` is a record with ``error`` and ``exit_code``."""
    ray = require_ray()
    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        ray.init(address=address, num_cpus=None if address else actors, include_dashboard=False,
                 log_to_driver=False, logging_level="WARNING", configure_logging=True)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller reports progress per source
        dataset = ray.data.from_items([{"source": source} for source in sources],
                                      override_num_blocks=max(1, len(sources)))
        records = dataset.map_batches(
            _Worker, batch_size=1, num_cpus=1, compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"load": load, "bundle": bundle, "options": options, "work": work},
            max_restarts=retries, max_task_retries=retries)
        for row in records.iter_rows():
            yield json.loads(row["record"])
    finally:
        if started_here:
            ray.shutdown()


def write_parquet(path: Path, records: list[dict[str, Any]], columns: dict[str, Any]) -> None:
    """One row per record in ``path`` (atomically), with the pyarrow types ``columns`` names (a field a record
    lacks, e.g. an error row's score, is null)."""
    pyarrow = importlib.import_module("pyarrow")
    parquet = importlib.import_module("pyarrow.parquet")
    schema = pyarrow.schema(list(columns.items()))
    table = pyarrow.Table.from_pylist([{name: record.get(name) for name in columns} for record in records],
                                      schema=schema)
    with atomic_output_file(path) as tmp:
        parquet.write_table(table, tmp)
