"""The self-contained HTML pages: inline CSS, inline SVG plots, data: URI images, a small inline sort script.
Every string taken from the input is escaped; nothing is fetched at view time. Pure functions: thread-safe."""
from __future__ import annotations

import html
import json
from typing import Any

from kvqe.report.crops import CropComparison
from kvqe.report.plots import histogram_svg, timeline_svg
from kvqe.report.thumbs import lowest, thumbnails

LOW_FRAMES = 3  # thumbnails per video

_STYLE = """body{font-family:sans-serif;margin:2em;color:#222;background:#fff}
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}
th{background:#e8eef6;cursor:pointer}.bad{color:#c0392b}.ok{color:#1e7b34}
.thumbs img{margin:4px;border:1px solid #888}section{margin-top:2em}"""

# clicking a header sorts the table by that column (numbers numerically), clicking again reverses
_SORT = """document.querySelectorAll('table.sortable th').forEach(function(th,col){th.onclick=function(){
var body=th.closest('table').tBodies[0],rows=Array.from(body.rows),dir=th.dataset.dir==='asc'?-1:1;
th.dataset.dir=dir===1?'asc':'desc';rows.sort(function(a,b){var x=a.cells[col].dataset.v||a.cells[col].textContent,
y=b.cells[col].dataset.v||b.cells[col].textContent,nx=parseFloat(x),ny=parseFloat(y);
return dir*(isNaN(nx)||isNaN(ny)?x.localeCompare(y):nx-ny);});rows.forEach(function(r){body.appendChild(r);});};});"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _document(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>\n{body}\n<script>{_SORT}</script>"
            "</body></html>\n")


def _video_section(number: int, row: dict[str, Any]) -> str:
    source = str(row["source"])
    head = f"<section id=\"video-{number}\"><h2>{_e(source)}</h2>"
    if row.get("error"):
        return head + f"<p class=\"bad\">error: {_e(row['error'])}</p></section>"
    times, scores = row.get("frame_times") or [], row.get("frame_scores") or []
    if not scores or len(times) != len(scores):
        return head + "<p>no per-frame scores in this record</p></section>"
    parts = [head, f"<p>score {float(row['score']):.4f} over {len(scores)} keyframes</p>",
             f"<div class=\"timeline\">{timeline_svg(times, scores)}</div>"]
    low = lowest(times, scores, LOW_FRAMES)
    thumbs = thumbnails(source, [time_s for time_s, _ in low])
    if isinstance(thumbs, str):
        parts.append(f"<p class=\"note\">{_e(thumbs)}</p>")
    else:
        images = "".join(f"<figure><img src=\"{uri}\" alt=\"frame at {t:.2f} s\"><figcaption>{t:.2f} s: "
                         f"{s:.4f}</figcaption></figure>" for uri, (t, s) in zip(thumbs, low))
        parts.append(f"<div class=\"thumbs\" style=\"display:flex\">{images}</div>")
    return "".join(parts) + "</section>"


def scores_page(rows: list[dict[str, Any]], title: str) -> str:
    """A batch of ``kvqe score`` records: the score distribution, a sortable table, one section per video."""
    scored = [float(row["score"]) for row in rows if not row.get("error") and row.get("score") is not None]
    body = [f"<p>{len(rows)} sources, {len(scored)} scored, {len(rows) - len(scored)} failed</p>"]
    if scored:
        body.append(f"<div class=\"distribution\">{histogram_svg(scored)}</div>")
    table = [("<table class=\"sortable\" id=\"scores\"><thead><tr><th>source</th><th>score</th><th>frames</th>"
              "<th>backend</th><th>precision</th><th>error</th></tr></thead><tbody>")]
    for number, row in enumerate(rows):
        score = row.get("score")
        cell = "" if score is None or row.get("error") else f"{float(score):.4f}"
        table.append(f"<tr><td><a href=\"#video-{number}\">{_e(row['source'])}</a></td><td data-v=\"{cell}\">"
                     f"{cell}</td><td>{_e(row.get('frames', ''))}</td><td>{_e(row.get('backend', ''))}</td>"
                     f"<td>{_e(row.get('precision', ''))}</td><td>{_e(row.get('error') or '')}</td></tr>")
    table.append("</tbody></table>")
    body.append("".join(table))
    body.extend(_video_section(number, row) for number, row in enumerate(rows))
    return _document(title, "\n".join(body))


def _gates(accuracy: dict[str, Any]) -> str:
    """Each gate an artifact was held to, with its figure and margin (``psnr=36.2 meets >=35 (by 1.2)``)."""
    results = accuracy.get("results") or []
    return "<br>".join(
        f"<span class=\"{'ok' if r.get('passed') else 'bad'}\">{_e(r.get('detail', ''))}</span>"
        for r in results if isinstance(r, dict))


def _crops_section(crops: list[CropComparison]) -> str:
    """FP32 | artifact | amplified difference, one row per lower-precision artifact."""
    if not crops:
        return ""
    rows = []
    for crop in crops:
        name = f"{crop.backend} {crop.precision}"
        if crop.note:
            rows.append(f"<tr><td>{_e(name)}</td><td colspan=\"3\">{_e(crop.note)}</td></tr>")
            continue
        rows.append(f"<tr><td>{_e(name)}<br>PSNR {crop.psnr_db} dB vs FP32</td>"
                    + "".join(f"<td><img src=\"{uri}\" alt=\"{_e(what)}\"></td>" for uri, what in (
                        (crop.reference_uri, "onnxruntime fp32"), (crop.candidate_uri, name),
                        (crop.difference_uri, "difference x8"))) + "</tr>")
    return ("<section id=\"crops\"><h2>The same crop, FP32 and each lower precision</h2><table id=\"crops\">"
            "<thead><tr><th>artifact</th><th>onnxruntime fp32</th><th>artifact</th>"
            "<th>|difference| x8</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table></section>")


def bundle_page(manifest: dict[str, Any], title: str, crops: list[CropComparison] | None = None) -> str:
    """A bundle: each artifact's accuracy record against FP32 (the reference's comparator, worst difference,
    tolerance and the margin left; every other artifact's gates with their margins; passed, deployable), its
    calibration, and for SR bundles ``crops``: the same picture through FP32 and each lower precision."""
    rows = []
    for artifact in manifest.get("artifacts", []):
        accuracy = artifact.get("accuracy") or {}
        comparator = accuracy.get("comparator", "")
        worst, tolerance = accuracy.get(comparator), accuracy.get("tolerance")
        margin = (f"{tolerance - worst:.3g}" if isinstance(worst, (int, float)) and isinstance(tolerance, (int, float))
                  else "")
        passed = accuracy.get("passed")
        rows.append(
            f"<tr><td>{_e(artifact.get('file', ''))}</td><td>{_e(artifact.get('backend', ''))}</td>"
            f"<td>{_e(artifact.get('precision', ''))}</td><td>{_e(accuracy.get('reference', ''))}</td>"
            f"<td>{_e(comparator)}</td><td data-v=\"{_e(worst)}\">{_e(worst)}</td><td>{_e(tolerance)}</td>"
            f"<td data-v=\"{margin}\">{margin}</td><td>{_gates(accuracy)}</td>"
            f"<td class=\"{'ok' if passed else 'bad'}\">{_e(passed)}</td>"
            f"<td>{_e(artifact.get('deployable'))}</td>"
            f"<td><code>{_e(json.dumps(artifact.get('calibration')))}</code></td></tr>")
    model = manifest.get("model", {})
    name = model.get("name", "") if isinstance(model, dict) else model
    body = (f"<p>task {_e(manifest.get('task', ''))}, model {_e(name)}, kvqe {_e(manifest.get('kvqe_version', ''))}"
            "</p><table class=\"sortable\" id=\"artifacts\"><thead><tr><th>file</th><th>backend</th><th>precision</th>"
            "<th>reference</th><th>comparator</th><th>worst</th><th>tolerance</th><th>margin</th><th>gates</th>"
            "<th>passed</th>"
            "<th>deployable</th><th>calibration</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            + _crops_section(crops or []))
    return _document(title, body)
