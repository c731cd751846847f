"""Prints what a CI run spent its time on, from the run log tests/conftest.py writes (``KVQE_TEST_LOG``).

Usage: ``python .ci/durations.py RUN_LOG.jsonl [--top N]``. The log is written line by line as tests start and
finish, so a run killed by CI's time limit is summarised too: the slowest tests so far, the failures, and the
tests that were still running. A test's time is setup + call + teardown, so a session fixture's cost lands on
the first test that builds it. The tier (``fast``, ``e2e``, ``slow``) comes from the ``tier`` property
tests/conftest.py records.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TestRecord:
    started: float
    tier: str = "?"
    seconds: float = 0.0
    outcome: str = "passed"
    phases: set[str] = field(default_factory=set)


def read_log(path: Path) -> tuple[dict[str, TestRecord], float]:
    """Each test's record, and the time of the log's last line."""
    tests: dict[str, TestRecord] = {}
    last = 0.0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        last = max(last, event["time"])
        record = tests.setdefault(event["test"], TestRecord(started=event["time"]))
        if event["event"] == "start":
            continue
        record.phases.add(event["event"])
        record.tier, record.seconds = event["tier"], record.seconds + event["seconds"]
        if event["outcome"] == "failed":
            record.outcome = "failed" if event["event"] == "call" else "error"
        elif event["outcome"] == "skipped" and record.outcome == "passed":
            record.outcome = "skipped"
    return tests, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if not args.log.is_file():
        print(f"no run log at {args.log}")
        return 0
    tests, last = read_log(args.log)
    finished = {name: t for name, t in tests.items() if "teardown" in t.phases}
    running = {name: t for name, t in tests.items() if "teardown" not in t.phases}
    print(f"== the {args.top} slowest tests (setup + call + teardown, seconds)")
    for name, test in sorted(finished.items(), key=lambda item: -item[1].seconds)[:args.top]:
        print(f"{test.seconds:8.1f}  {test.tier:<5} {test.outcome:<7} {name}")
    failed = [name for name, test in finished.items() if test.outcome in ("failed", "error")]
    if failed:
        print(f"== {len(failed)} failed")
        print("\n".join(f"          {name}" for name in failed))
    if running:
        now = time.time()
        print(f"== {len(running)} still running when the run ended (seconds since each started)")
        for name, test in sorted(running.items(), key=lambda item: item[1].started):
            print(f"{now - test.started:8.1f}  {name}")
    per_tier: dict[str, list[float]] = defaultdict(list)
    for test in finished.values():
        per_tier[test.tier].append(test.seconds)
    print("== per tier: tests finished, summed test time (worker time; with -n 2 the wall time is about half)")
    for tier in sorted(per_tier):
        times = per_tier[tier]
        print(f"{tier:<5} {len(times):5d} tests {sum(times) / 60:7.1f} min")
    if tests:
        first = min(test.started for test in tests.values())
        print(f"pytest, first test to last result: {(last - first) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
