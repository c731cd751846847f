"""``kvqe info`` and ``kvqe verify``: show a bundle and check its files, re-run its accuracy gates here."""
from __future__ import annotations

from pathlib import Path

import click

from kvqe.bundle import Artifact
from kvqe.clitools import emit, handle_errors
from kvqe.commands.options import json_option
from kvqe.errors import AccuracyGateError, BundleError
from kvqe.sdk.loader import resolve_bundle


@click.command()
@click.argument("bundle_path", metavar="BUNDLE")
@json_option
@handle_errors
def info(bundle_path: str, as_json: bool) -> None:
    """Show BUNDLE's manifest (a directory, or an embedded name such as `sr`) and whether every file it
    lists (artifacts, their companion files, validation data) verifies (exit 2 if not)."""
    try:
        bundle = resolve_bundle(bundle_path)
    except BundleError as exc:  # the manifest itself is missing or malformed: nothing of it can be shown
        if as_json:
            emit({"bundle": bundle_path, "verified": False, "error": str(exc)}, True, "")
        raise
    checks = bundle.verify_all()
    manifest = bundle.manifest

    def problems(artifact: Artifact) -> list[str]:
        names = [artifact.file, *(entry.file for entry in artifact.extra_files)]
        return [message for name in names if (message := checks.get(name))]

    artifacts = [{**a.record, "verified": not problems(a), "error": "; ".join(problems(a)) or None}
                 for a in bundle.artifacts]
    verified = all(v is None for v in checks.values())
    record = {"bundle": bundle_path, "schema_version": manifest["schema_version"],
              "kvqe_version": manifest.get("kvqe_version"), "model": manifest["model"],
              "task": bundle.task, "input": manifest["input"], "output": manifest["output"],
              "licence": manifest.get("licence"), "weights": manifest.get("weights"),
              "artifacts": artifacts, "files": checks, "verified": verified}
    lines = [f"bundle   {bundle_path}",
             (f"model    {bundle.model_name} ({bundle.task}), {manifest['model'].get('params', '?')} params, "
              f"{manifest['model'].get('gflops', '?')} GFLOPs per {manifest['model'].get('flops_input', '?')}"),
             f"licence  {manifest.get('licence')}",
             f"weights  {(manifest.get('weights') or {}).get('source')}",
             f"output   {manifest['output']}"]
    for a in artifacts:
        state = "ok" if a["verified"] else f"FAILED: {a['error']}"
        companions = a.get("extra_files", [])
        files = a["file"] + "".join(f" + {e['file']}" for e in companions)
        size = a["bytes"] + sum(e["bytes"] for e in companions)  # an OpenVINO .xml is little without its .bin
        lines.append(f"artifact {a['backend']}/{a['precision']}  {files}  {size:,} bytes  "
                     f"deployable={a['deployable']}  sha256 {state}")
    others = {name: message for name, message in checks.items()
              if not any(name == a["file"] or name in {e["file"] for e in a.get("extra_files", [])}
                         for a in artifacts)}
    lines += [f"file     {name}  sha256 {'ok' if message is None else f'FAILED: {message}'}"
              for name, message in others.items()]
    emit(record, as_json, "\n".join(lines))
    if not verified:
        failures = "; ".join(msg for msg in checks.values() if msg)
        raise BundleError(f"bundle does not verify: {failures}")


@click.command()
@click.argument("bundle_path", metavar="BUNDLE")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Videos/images to verify on instead of the bundle's own validation data.")
@json_option
@handle_errors
def verify(bundle_path: str, data: Path | None, as_json: bool) -> None:
    """Re-run BUNDLE's accuracy gates on this machine (exit 3 if an artifact misses one)."""
    from kvqe.calibration.verify import verify_bundle

    bundle = resolve_bundle(bundle_path)
    failed = False
    for record in verify_bundle(bundle, data):
        if "skipped" in record:
            emit(record, as_json, f"{record['artifact']:18s} skipped: {record['skipped']}")
            continue
        failed = failed or not record["passed"]
        figures = "  ".join(f"{k}={v:.4g}" for k, v in sorted(record["metrics"].items()) if isinstance(v, float))
        state = "passes" if record["passed"] else "FAILS " + "; ".join(record["failures"])
        emit(record, as_json, f"{record['artifact']:18s} {state}  {figures}")
    if failed:
        raise AccuracyGateError("an artifact misses its accuracy gates on this machine")
