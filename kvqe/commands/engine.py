"""The ``--engine ray`` path of ``kvqe score`` and ``kvqe enhance``: the options, and the jobs the Ray actors run
(module-level functions of those commands, so Ray pickles them by reference)."""
from __future__ import annotations

from typing import Any

import click

from kvqe import scaleout
from kvqe.clitools import emit
from kvqe.sdk.loader import load

engine_options = [
    click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="local: this process; ray: a pool of Ray actors, each loading the bundle once "
                      f"({scaleout.INSTALL_HINT})."),
    click.option("--address", default=None, help="With --engine ray: the Ray cluster to connect to "
                                                 "(default: start a local Ray)."),
    click.option("--actors", type=click.IntRange(min=1), default=2, show_default=True,
                 help="With --engine ray: actors in the pool (each one CPU)."),
    click.option("--retries", type=click.IntRange(min=0), default=3, show_default=True,
                 help="With --engine ray: retries of a failed task or a lost actor."),
]


def with_engine_options(command: Any) -> Any:
    """Decorate a command with the engine options."""
    for option in reversed(engine_options):
        command = option(command)
    return command


def progress(done: int, total: int, record: dict[str, Any]) -> None:
    """One line on stderr per finished source."""
    what = f"error: {record['error']}" if "error" in record else "ok"
    click.echo(f"[{done}/{total}] {record.get('source', record.get('input'))}: {what}", err=True)


def run_on_ray(sources: list[str], job: scaleout.Work, bundle: str, load_options: dict[str, Any],
               engine: dict[str, Any], as_json: bool) -> list[dict[str, Any]]:
    """Run ``job`` over ``sources`` on Ray, printing each record as it finishes (and progress on stderr); the
    records in the order of ``sources``."""
    records = []
    for record in scaleout.run(sources, job, load=load, bundle=bundle, options=load_options,
                               actors=engine["actors"], address=engine["address"], retries=engine["retries"]):
        records.append(record)
        progress(len(records), len(sources), record)
        name = record.get("source", record.get("input"))
        emit(record, as_json, f"{name}: error: {record['error']}" if "error" in record else
             f"{name}\t{record.get('score', record.get('output'))}")
    order = {source: index for index, source in enumerate(sources)}
    return sorted(records, key=lambda r: order.get(str(r.get("source", r.get("input"))), len(order)))
