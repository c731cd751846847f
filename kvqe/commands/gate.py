"""``kvqe gate``: pass, enhance or reject each source against a minimum score; exit 5 when any is rejected."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from kvqe.clitools import describe, emit, exit_code, handle_errors
from kvqe.commands.options import (
    backend_option,
    check_numbers,
    demuxers_option,
    json_option,
    max_pixels_option,
    precision_option,
    protocols_option,
    require_task,
    source_limits,
    threads_option,
    timeout_option,
    undeployable_option,
)
from kvqe.commands.score import expand
from kvqe.errors import BadInputError
from kvqe.gate_policy import Policy, load_policy
from kvqe.gating import GateResult, gate
from kvqe.sdk.loader import load

EXIT_REJECTED = 5
DEFAULT_MAX_GAIN_SHARE = 0.25  # --max-gain-check without a policy ceiling: a quarter of the score range


def _text(result: GateResult) -> str:
    if result.score is None:
        return f"{result.source}\t{result.decision}\t{result.reason}: {result.detail}"
    enhanced = "" if result.enhanced_score is None else f" -> {result.enhanced_score:.2f}"
    kept = f" -> {result.output}" if result.output else ""
    return (f"{result.source}\t{result.decision}\t{result.score:.2f}{enhanced} "
            f"(threshold {result.threshold:g} from {result.threshold_from}){kept}")


@click.command("gate")
@click.argument("sources", nargs=-1, required=True)
@click.option("--min-score", type=float, default=None, help="Minimum score to pass (overrides --policy).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML policy: thresholds per resolution class (<=540p, 720p, >=1080p), default, enhance.")
@click.option("--enhance", "enhancer", default=None, metavar="BUNDLE",
              help="Enhance a source below the threshold with this SR bundle (name or directory); needs -o.")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for kept enhancements (each under its source's file name).")
@click.option("--segment-seconds", type=float, default=None,
              help="Also decide each window of this many seconds (as a live stream would be gated).")
@click.option("--max-gain-check", is_flag=True,
              help="Do not keep an enhancement whose score gain exceeds the policy's max_gain (default: a quarter "
                   "of the scorer's score range): a no-reference scorer can overrate the enhancer's sharpening.")
@click.option("--bundle", default="vqa", show_default=True, help="Scoring bundle directory or embedded name.")
@backend_option
@precision_option
@threads_option
@timeout_option
@max_pixels_option
@protocols_option
@demuxers_option
@undeployable_option
@json_option
@handle_errors
def gate_command(sources: tuple[str, ...], min_score: float | None, policy_path: Path | None,
                 enhancer: str | None, output_dir: Path | None, segment_seconds: float | None,
                 max_gain_check: bool, bundle: str,
                 backend: str, precision: str | None, threads: int, timeout: float, max_pixels: int,
                 protocols: str, demuxers: str, allow_undeployable: bool, as_json: bool) -> None:
    """Gate each SOURCE (video file, image, folder or glob): pass when its score reaches the threshold;
    else, with --enhance, keep the enhanced version when it scores higher and reaches it; else reject.
    Exit 0 when all pass or were enhanced, 5 when any was rejected, 2/4/1 on errors."""
    check_numbers(min_score=min_score, segment_seconds=segment_seconds, threads=threads, timeout=timeout,
                  max_pixels=max_pixels)
    if min_score is None and policy_path is None:
        raise BadInputError("give --min-score X or --policy FILE")
    policy: Policy | None = load_policy(policy_path) if policy_path is not None else None
    enhancer = enhancer or (policy.enhance if policy else None)
    if enhancer is not None and output_dir is None:
        raise BadInputError("--enhance (or the policy's enhance) needs -o FOLDER for the enhanced outputs")
    options: dict[str, Any] = {"backend": backend, "precision": precision, "threads": threads,
               "allow_undeployable": allow_undeployable}
    scorer = load(bundle, **options)
    require_task(scorer, "vqa", "kvqe gate")
    max_gain = None
    if max_gain_check:
        low, high = scorer.output_spec.score_range or (0.0, 1.0)
        max_gain = policy.max_gain if policy and policy.max_gain else DEFAULT_MAX_GAIN_SHARE * (high - low)
    sr = None if enhancer is None else load(enhancer, **options)
    if sr is not None:
        require_task(sr, "sr", "kvqe gate --enhance")
    limits = source_limits(timeout, max_pixels, protocols, demuxers)
    failure, rejected = 0, False
    targets: set[Path | None] = set()
    for given in sources:
        try:
            expanded = expand(given)
        except BadInputError as exc:
            expanded, failure = [], failure or exc.exit_code
            emit({"source": given, "error": str(exc)}, as_json, f"{given}: error: {exc}")
        for source in expanded:
            if source == "-":
                refused = BadInputError("SOURCE '-': gate reads files and URLs, not stdin (the enhancement is re-read)")
                failure = failure or refused.exit_code
                emit({"source": source, "error": str(refused)}, as_json, f"-: error: {refused}")
                continue
            target = None if output_dir is None else output_dir / Path(source).name
            try:
                if target is not None and target in targets:
                    raise BadInputError(f"{source}: another source already writes {target} (same file name)")
                targets.add(target)
                result = gate(source, min_score=min_score, policy=policy, scorer=scorer, enhancer=sr,
                              output=target, segment_seconds=segment_seconds, max_gain=max_gain, **limits)
            except Exception as exc:  # noqa: BLE001 (one bad source must not stop the others)
                failure = failure or exit_code(exc)
                emit({"source": source, "error": describe(exc)}, as_json, f"{source}: error: {describe(exc)}")
                continue
            rejected = rejected or result.decision == "reject"
            emit(result.to_record(), as_json, _text(result))
    if failure:
        sys.exit(failure)
    if rejected:
        sys.exit(EXIT_REJECTED)
