#!/usr/bin/env bash
# Type-check the kvqe namespace with mypy, TensorRT code included (against the tensorrt-stubs package).
# The package maps top-level folders into kvqe.* (see pyproject.toml), which mypy cannot follow, so a
# throwaway tree of symlinks mirrors the import layout. tensorrt-stubs 10.13 does not parse as shipped
# (a parameter named `in`, a non-default argument after defaults, an import of the runtime-only
# tensorrt_libs): a corrected copy of the stubs goes on MYPYPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
TREE="$(mktemp -d)"
trap 'rm -rf "$TREE"' EXIT
mkdir -p "$TREE/kvqe" "$TREE/stubs"
for entry in kvqe/*; do ln -s "$ROOT/$entry" "$TREE/kvqe/$(basename "$entry")"; done
for folder in sdk runtimes calibration models export training; do ln -s "$ROOT/$folder" "$TREE/kvqe/$folder"; done
"$PYTHON" - "$TREE/stubs" <<'PY'
import importlib.util, re, shutil, sys
from pathlib import Path
target = Path(sys.argv[1])
for package in ("tensorrt", "tensorrt_bindings"):
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("tensorrt-stubs is not installed: pip install tensorrt-stubs")
    for stub in Path(next(iter(spec.submodule_search_locations))).glob("*.pyi"):
        text = stub.read_text()
        text = re.sub(r"\bin: ", "in_: ", text)
        text = text.replace("channel_axis: int)", "channel_axis: int = ...)")
        text = text.replace("import tensorrt_libs as tensorrt_libs", "")
        (target / package).mkdir(exist_ok=True)
        (target / package / stub.name).write_text(text)
PY
cd "$TREE" && MYPYPATH="$TREE/stubs" "$PYTHON" -m mypy --config-file "$ROOT/pyproject.toml" -p kvqe
