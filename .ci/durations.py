"""Prints what a CI run spent its time on, from the JUnit XML files pytest wrote (``--junitxml``).

Usage: ``python .ci/durations.py REPORT.xml [...] [--top N]``. Each test's time is setup + call + teardown
(pytest's ``junit_duration_report=total``), so a session fixture's cost lands on the first test that builds it.
The tier of each test (``fast``, ``e2e``, ``slow``) comes from the ``tier`` property tests/conftest.py records.
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def _cases(report: Path) -> list[tuple[str, str, float, str]]:
    rows = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tier = next((p.get("value", "?") for p in case.iter("property") if p.get("name") == "tier"), "?")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        rows.append((name, tier, float(case.get("time") or 0.0), outcome))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    rows = [row for report in args.reports if report.is_file() for row in _cases(report)]
    if not rows:
        print("no JUnit test cases found in " + ", ".join(map(str, args.reports)))
        return 0
    print(f"== the {args.top} slowest tests (setup + call + teardown, seconds)")
    for name, tier, seconds, outcome in sorted(rows, key=lambda r: -r[2])[:args.top]:
        print(f"{seconds:8.1f}  {tier:<5} {outcome:<7} {name}")
    per_tier: dict[str, list[float]] = defaultdict(list)
    for _, tier, seconds, _ in rows:
        per_tier[tier].append(seconds)
    print("== per tier: tests, summed test time (worker-seconds; with -n 2 the wall time is about half)")
    for tier in sorted(per_tier):
        times = per_tier[tier]
        print(f"{tier:<5} {len(times):5d} tests {sum(times) / 60:7.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
