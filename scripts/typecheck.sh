#!/usr/bin/env bash
# Type-check the kvqe namespace with mypy. The package maps top-level folders into kvqe.* (see
# pyproject.toml), which mypy cannot follow, so a throwaway tree of symlinks mirrors the import layout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TREE="$(mktemp -d)"
trap 'rm -rf "$TREE"' EXIT
mkdir -p "$TREE/kvqe"
for entry in kvqe/*; do ln -s "$ROOT/$entry" "$TREE/kvqe/$(basename "$entry")"; done
for folder in sdk runtimes calibration export; do ln -s "$ROOT/$folder" "$TREE/kvqe/$folder"; done
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
cd "$TREE" && "$PYTHON" -m mypy --config-file "$ROOT/pyproject.toml" -p kvqe
