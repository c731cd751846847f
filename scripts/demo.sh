#!/usr/bin/env bash
# The main job on the embedded defaults with the runtime install alone (no torch): score the shipped
# sample video with the embedded distilled student, enhance the shipped sample photo 4x with the
# embedded Real-ESRGAN bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-runtime
.venv-runtime/bin/python -m pip install -q --upgrade pip
.venv-runtime/bin/python -m pip install -q .
.venv-runtime/bin/kvqe info vqa
.venv-runtime/bin/kvqe score kvqe/samples/astronaut_pan.mp4
.venv-runtime/bin/kvqe info sr
.venv-runtime/bin/kvqe enhance kvqe/samples/astronaut.png -o astronaut_x4.png
