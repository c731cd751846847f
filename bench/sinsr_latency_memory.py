"""Latency and peak memory of one SIZExSIZE -> 4SIZEx4SIZE enhancement (default 128 -> 512): SinSR alone and the
sinsr+realesrgan pipeline, per backend (onnxruntime, openvino; fp32), through ``kvqe.load(...).enhance()``.

The nets get the shared fixtures' generated weights (``../shared/fixtures/sinsr/weights.py``; the real
checkpoints are non-commercial and never needed here): the FULL config by default (~700 MB of ONNX, written
under a temporary directory in /tmp and deleted afterwards unless --keep), or --config small. The stages are
exported with ``export_onnx`` and converted with ``convert_to_ir``; the restore stage is the embedded
realesr-animevideov3 graph. Bench bundles are written without accuracy gates (``kvqe-export`` gates real ones).
``--smoke``: the same steps on a one-level UNet and a one-block VQ (``--config tiny``: initialised weights, the
fixtures hold no layout for it; exporting the small config takes minutes) and a 32x32 input, to check that the
script runs (its figures mean nothing).
Each configuration runs in a fresh process (peak RSS, ``ru_maxrss``, is per process; the export runs in
another one, so the parent stays small: an exec'd child starts from its parent's ``ru_maxrss``); ratios are
against SinSR on onnxruntime fp32 measured in the same run.

Usage: python bench/sinsr_latency_memory.py [--config full|small|tiny] [--size 128]
       [--backends onnxruntime,openvino] [--repeat 1] [--workdir DIR] [--keep] [--smoke]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "sinsr"

_CHILD = """
import json, resource, sys, time
import cv2, kvqe
from kvqe.samples import sample_image_path
bundle, backend, size, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
image = cv2.resize(cv2.imread(str(sample_image_path())), (size, size), interpolation=cv2.INTER_AREA)
start = time.perf_counter()
model = kvqe.load(bundle, backend=backend, precision="fp32")
loaded = time.perf_counter() - start
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seconds = []
for _ in range(repeat):
    start = time.perf_counter()
    out = model.enhance(image)
    seconds.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"load_s": loaded, "seconds": seconds, "out": list(out.shape), "loaded_mib": base / 1024,
                  "peak_mib": peak / 1024}))
"""


def _weights(net: Any, layout: str) -> None:
    import torch

    spec = importlib.util.spec_from_file_location("fixture_weights", FIXTURES / "weights.py")
    if spec is None or spec.loader is None or not (FIXTURES / "weights.py").is_file():
        sys.exit(f"the shared fixtures are expected at {FIXTURES}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = module.make_state_dict(json.loads((FIXTURES / f"layout_{layout}.json").read_text()), seed=0)
    net.load_state_dict({**net.state_dict(), **{k: torch.from_numpy(v) for k, v in state.items()}})


def export_stages(config: str, workdir: Path, backends: list[str]) -> dict[str, dict[str, list[Path]]]:
    """Stage graphs per backend: {stage: {backend: [main file, companions...]}}."""
    import numpy as np
    import torch

    from kvqe.export.onnx_export import export_onnx, torch_reference
    from kvqe.export.stage_plan import card_stages
    from kvqe.models.registry import get_model
    from kvqe.models.sinsr import build_sinsr, small_sinsr, tiny_sinsr
    from kvqe.models.sinsr.configs import UNET_FULL, VQ_FULL
    from kvqe.samples import sample_image_path
    from kvqe.sdk.images import read_image
    from kvqe.sdk.loader import embedded_bundle_path
    from kvqe.sdk.pipelines import compose, describe
    from kvqe.sdk.preprocess import preprocess_sr_image

    t0 = time.perf_counter()
    torch.manual_seed(0)  # the tiny nets keep their initialised weights
    model = {"full": lambda: build_sinsr(UNET_FULL, VQ_FULL), "small": small_sinsr, "tiny": tiny_sinsr}[config]()
    if config != "tiny":  # the fixtures hold the layouts of the full and small nets only
        _weights(model.unet, f"unet_{config}")
        _weights(model.vq, f"vq_{config}")
    card = get_model("sinsr").card
    stages = model.stages()
    specs = card_stages(card, list(stages))[0]
    lr = preprocess_sr_image(read_image(sample_image_path()), card.input)[None, :, :64, :64].copy()
    with compose(describe("sinsr"), {s: torch_reference(stages[s], specs[s]) for s in stages}) as traced:
        examples = traced.trace(np.ascontiguousarray(lr))
    files: dict[str, dict[str, list[Path]]] = {}
    for stage, net in stages.items():
        onnx_path = workdir / f"{stage}.fp32.onnx"
        export_onnx(net, specs[stage], examples[stage], onnx_path)
        files[stage] = {"onnxruntime": [onnx_path]}
    restore = workdir / "restore.fp32.onnx"
    shutil.copyfile(embedded_bundle_path("sr") / "model.fp32.onnx", restore)
    files["restore"] = {"onnxruntime": [restore]}
    if "openvino" in backends:
        from kvqe.export.openvino_export import convert_to_ir

        for stage, by_backend in files.items():
            xml = workdir / f"{stage}.openvino.fp32.xml"
            convert_to_ir(by_backend["onnxruntime"][0], xml, compress_to_fp16=False)
            by_backend["openvino"] = [xml, xml.with_suffix(".bin")]
    print(f"exported the {config} stages in {time.perf_counter() - t0:.0f} s "
          f"({sum(p.stat().st_size for f in files.values() for ps in f.values() for p in ps) / 1e6:.0f} MB)",
          file=sys.stderr)
    return files


def write_bundle(kind: str, files: dict[str, dict[str, list[Path]]], out: Path, hashes: dict[Path, str]) -> Path:
    """A bench bundle (hard links to the stage files; deployable without gates: for measuring only)."""
    from kvqe.bundle import write_manifest
    from kvqe.files import sha256_file
    from kvqe.manifest import Manifest
    from kvqe.models.registry import get_model
    from kvqe.sdk.pipelines.sinsr import KINDS, describe

    card = get_model(kind).card
    out.mkdir(parents=True)
    artifacts = []
    for stage in KINDS[kind]:
        for backend, paths in files[stage].items():
            entries = []
            for path in paths:
                os.link(path, out / path.name)
                digest = hashes.setdefault(path, sha256_file(path))
                entries.append({"file": path.name, "sha256": digest, "bytes": path.stat().st_size})
            runtime = {"inference_precision": "f32"} if backend == "openvino" else {}
            artifacts.append({"stage": stage, "backend": backend, "precision": "fp32", **entries[0],
                              "extra_files": entries[1:], "runtime": runtime, "deployable": True,
                              "accuracy": {"note": "bench bundle, not gated"}})
    write_manifest(out, Manifest(model={"name": kind}, task="sr", input=card.input, output=card.output,
                                 artifacts=tuple(artifacts), pipeline=describe(kind), licence=card.licence))
    return out


def measure(bundle: Path, backend: str, size: int, repeat: int) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-c", _CHILD, str(bundle), backend, str(size), str(repeat)],
                         capture_output=True, text=True, check=False)
    if run.returncode:
        raise SystemExit(f"{bundle.name} on {backend} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def export_and_write(config: str, workdir: Path, backends: list[str]) -> dict[str, str]:
    """Run in its own process (so that the parent, whose memory every measuring child inherits as its
    starting ``ru_maxrss``, stays small): the graphs and the two bench bundles."""
    files = export_stages(config, workdir, backends)
    hashes: dict[Path, str] = {}
    return {kind: str(write_bundle(kind, files, workdir / kind.replace("+", "_"), hashes))
            for kind in ("sinsr", "sinsr+realesrgan")}


def main() -> None:
    if sys.argv[1:2] == ["--export-into"]:  # the exporting child
        print(json.dumps(export_and_write(sys.argv[3], Path(sys.argv[2]), sys.argv[4].split(","))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("full", "small", "tiny"), default="full")
    parser.add_argument("--size", type=int, default=128, help="input edge in pixels (output is 4x)")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--repeat", type=int, default=1, help="enhancements per process (the first is reported "
                                                              "as 'first', the minimum as 'best')")
    parser.add_argument("--workdir", type=Path, default=None, help="where the graphs go (default: a temp dir in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the exported graphs")
    parser.add_argument("--smoke", action="store_true", help="the tiny config, a 32x32 input: does it run?")
    args = parser.parse_args()
    if args.smoke:
        args.config, args.size = "tiny", 32
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kvqe-sinsr-bench-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        exported = subprocess.run([sys.executable, __file__, "--export-into", str(workdir), args.config,
                                   ",".join(backends)], stdout=subprocess.PIPE, text=True, check=True)
        bundles = {kind: Path(path) for kind, path in json.loads(exported.stdout.strip().splitlines()[-1]).items()}
        rows = []
        for kind, bundle in bundles.items():
            for backend in backends:
                print(f"measuring {kind} on {backend} ...", file=sys.stderr)
                rows.append((kind, backend, measure(bundle, backend, args.size, args.repeat)))
        base = rows[0][2]
        print(f"{args.size}x{args.size} -> {4 * args.size}x{4 * args.size}, {args.config} config "
              f"({'initialised' if args.config == 'tiny' else 'generated'} weights), "
              f"fp32, one tile, {os.cpu_count()} CPUs; ratios vs sinsr/onnxruntime")
        print(f"{'pipeline':18} {'backend':12} {'load s':>7} {'first s':>8} {'best s':>7} {'peak MiB':>9} "
              f"{'loaded MiB':>10} {'time ratio':>10} {'mem ratio':>9}")
        for kind, backend, r in rows:
            print(f"{kind:18} {backend:12} {r['load_s']:7.1f} {r['seconds'][0]:8.2f} {min(r['seconds']):7.2f} "
                  f"{r['peak_mib']:9.0f} {r['loaded_mib']:10.0f} {min(r['seconds']) / min(base['seconds']):10.2f} "
                  f"{r['peak_mib'] / base['peak_mib']:9.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
