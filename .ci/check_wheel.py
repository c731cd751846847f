"""Checks the kvqe wheel installed alone: the runtime works from the package data, without torch."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2

from kvqe.samples import sample_image_path, sample_video_path
from kvqe.sdk.loader import EMBEDDED

assert importlib.util.find_spec("torch") is None, "the runtime install must not pull torch"
assert "site-packages" in str(sample_image_path()), "the wheel, not the source tree, must be tested"
bin_dir = Path(sys.executable).parent
out = Path("/tmp/kvqe-wheel-x4.png")
run = subprocess.run([str(bin_dir / "kvqe"), "enhance", str(sample_image_path()), "-o", str(out), "--json"],
                     capture_output=True, text=True, check=True)
record = json.loads(run.stdout)
assert (record["out_width"], record["out_height"]) == (768, 768), record
assert cv2.imread(str(out)).shape == (768, 768, 3)
for name in EMBEDDED:  # each is declared in pyproject.toml's packages: one left out would be missing here
    info = subprocess.run([str(bin_dir / "kvqe"), "info", name, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["verified"] is True, name
scored = subprocess.run([str(bin_dir / "kvqe"), "score", str(sample_video_path()), "--json"],
                        capture_output=True, text=True, check=True)
result = json.loads(scored.stdout)
assert 0.0 <= result["score"] <= 100.0 and result["frames"] >= 2, result  # the embedded distilled student
missing = subprocess.run([str(bin_dir / "kvqe-export"), "list"], capture_output=True, text=True, check=False)
assert missing.returncode == 4 and "kvqe[export]" in missing.stderr and "Traceback" not in missing.stderr, missing
print("wheel runtime checks ok")
