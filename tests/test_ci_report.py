"""CI's record of a run: tests/conftest.py's run log (``KVQE_TEST_LOG``) and .ci/durations.py's summary of it,
including a run killed before its end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DURATIONS = ROOT / ".ci" / "durations.py"


def summarise(log: Path) -> str:
    return subprocess.run([sys.executable, str(DURATIONS), str(log)], capture_output=True, text=True,
                          check=True).stdout


def test_a_pytest_run_logs_each_test_as_it_ends_and_the_summary_names_them(tmp_path: Path) -> None:
    log = tmp_path / "tests.jsonl"
    chosen = ["tests/test_layout.py::test_the_cycle_finder_finds_a_circle",
              "tests/test_ci_report.py::test_a_killed_run_shows_what_finished_failed_and_was_still_running"]
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *chosen], cwd=ROOT,
                   env={**os.environ, "KVQE_TEST_LOG": str(log)}, check=True, capture_output=True)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "setup", "call", "teardown"] * 2
    assert {e["test"] for e in events} == set(chosen)
    assert all(e["tier"] == "fast" and e["seconds"] >= 0 for e in events if e["event"] != "start")
    summary = summarise(log)
    assert all(name in summary for name in chosen) and "fast      2 tests" in summary
    assert not [line for line in summary.splitlines() if line.startswith("== ") and ("failed" in line or "running" in line)]


def test_a_killed_run_shows_what_finished_failed_and_was_still_running(tmp_path: Path) -> None:
    def record(event: str, test: str, when: float, seconds: float = 0.0, outcome: str = "passed") -> str:
        return json.dumps({"time": when, "event": event, "test": test, "tier": "slow", "seconds": seconds,
                           "outcome": outcome})

    log = tmp_path / "tests.jsonl"
    lines = [json.dumps({"time": 100.0, "event": "start", "test": "t.py::long"}),
             json.dumps({"time": 101.0, "event": "start", "test": "t.py::broken"}),
             record("setup", "t.py::broken", 102.0, 1.0), record("call", "t.py::broken", 190.0, 88.0, "failed"),
             record("teardown", "t.py::broken", 190.5, 0.5),
             record("setup", "t.py::long", 400.0, 300.0)]
    log.write_text("\n".join(lines) + '\n{"time": 401.0, "ev')  # the last line cut short by the kill
    summary = summarise(log)
    assert "89.5  slow  failed  t.py::broken" in summary
    assert "== 1 failed" in summary and "t.py::long" in summary.split("== 1 still running")[1]
    assert "slow      1 tests     1.5 min" in summary
    assert "first test to last result: 5.0 min" in summary
