#!/usr/bin/env bash
# Set up a venv with every extra CI can install (export, openvino, dev), then lint, type-check (TensorRT code
# against tensorrt-stubs) and run the tests on both cores (pytest-xdist, `-n 2 --dist loadfile`: each test module
# runs in one worker, so its module fixtures are built once; exported full-size bundles are built once per run and
# shared by both workers, tests/artifacts.py). Not `--dist loadgroup`: with pytest 9, xdist 3.8's groups have no
# effect (it renames `item._nodeid`, which pytest 9 no longer reads), so grouped tests were spread anyway.
# `--no-loadscope-reorder`: modules are handed out in conftest's order (the longest first), not xdist's default
# of the most tests first, which started the run's longest export last.
# Without arguments it runs the default suite (the `slow` tests deselected). `--all` runs every tier in one
# pytest run, as CI does; further arguments go to pytest. Any other arguments go to pytest instead of the
# defaults, e.g. `bash scripts/test.sh -m slow` or `bash scripts/test.sh tests/test_sources.py`.
# The default suite is the fast tier plus the `e2e` tests (full-size models, kvqe-export in subprocesses).
# The fast tier alone, for an edit-test loop: `bash scripts/test.sh -n 2 -m "not slow and not e2e"`, or without
# the setup, lint and type-check above it: `.venv/bin/python -m pytest -n 2 -m "not slow and not e2e"`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
    else
        echo "ffmpeg is not installed: tests that need it will be skipped (apt-get install ffmpeg)" >&2
    fi
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # renders kvqe report pages headless in tests/test_report.py (skipped without it)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[export,openvino,training,ray,report,dev]'
.venv/bin/python -m pip install -q --no-deps tensorrt-stubs  # its dependencies would pull the TensorRT wheel
.venv/bin/python -m ruff check .
PYTHON="$PWD/.venv/bin/python" bash scripts/typecheck.sh
PARALLEL=(-n 2 --dist loadfile --no-loadscope-reorder)
if [ "$#" -eq 0 ]; then
    set -- "${PARALLEL[@]}" -m "not slow"
elif [ "$1" = "--all" ]; then
    shift
    set -- "${PARALLEL[@]}" "$@"
fi
exec .venv/bin/python -m pytest "$@"
