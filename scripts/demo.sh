#!/usr/bin/env bash
# The main job on the embedded defaults with the runtime install alone (no torch):
# enhance the shipped sample photo 4x with the embedded Real-ESRGAN bundle. (Scoring needs a VQA bundle:
# none ships until the distilled student meets its targets; see README.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-runtime
.venv-runtime/bin/python -m pip install -q --upgrade pip
.venv-runtime/bin/python -m pip install -q .
.venv-runtime/bin/kvqe info sr
.venv-runtime/bin/kvqe enhance kvqe/samples/astronaut.png -o astronaut_x4.png
