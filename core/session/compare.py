"""Comparison of two sessions (an original and its replay): per-turn decisions, texts and latencies.

The verdict ``match`` needs the same turns with the same decisions, user texts, assistant texts, interruptions and,
for a cut-off answer, the same heard text (texts compared with whitespace collapsed). Latencies are reported side by side but never part of the verdict: a
live session's clock is the wall clock, a replay's is the virtual clock.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from core.session.store import EVENTS_NAME, FILE_MODE, REPORT_JSON, REPORT_MD, atomic_write_text, read_meta
from core.session.transcript import TurnSummary, read_events, summarize_turns

LATENCY_KEYS = ("decision_ms", "first_audio_ms", "first_played_ms")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def dialogue_only(turns: list[TurnSummary]) -> list[TurnSummary]:
    """Turns that are part of the dialogue: a decision other than keep-listening, or any text."""
    return [s for s in turns
            if [d for d in s.decisions if d != "cl"] or s.user_text.strip() or s.assistant_text.strip()]


def dialogue_turns(events_file: str | os.PathLike) -> list[TurnSummary]:
    return dialogue_only(summarize_turns(read_events(events_file)))


def compare_turns(original: list[TurnSummary], replay: list[TurnSummary]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    reasons: list[str] = []
    for i in range(max(len(original), len(replay))):
        a = original[i] if i < len(original) else None
        b = replay[i] if i < len(replay) else None
        row: dict[str, Any] = {"index": i + 1,
                               "turn": {"original": a.turn if a else None, "replay": b.turn if b else None}}
        if a is None or b is None:
            row["match"] = False
            row["missing_in"] = "original" if a is None else "replay"
            reasons.append(f"turn #{i + 1}: only in the {'replay' if a is None else 'original'}")
            present = a or b
            row["original" if a else "replay"] = present.to_dict()
            rows.append(row)
            continue
        checks = {
            "decisions": ([d for d in a.decisions if d != "cl"], [d for d in b.decisions if d != "cl"]),
            "user_text": (_norm(a.user_text), _norm(b.user_text)),
            "assistant_text": (_norm(a.assistant_text), _norm(b.assistant_text)),
            "interrupted": (a.interrupted, b.interrupted),
            "heard_text": (_norm(a.heard_text) if a.interrupted else None,
                           _norm(b.heard_text) if b.interrupted else None),
        }
        row["decision"] = {"original": a.decision, "replay": b.decision}
        for key, (x, y) in checks.items():
            row[key] = {"original": x, "replay": y, "same": x == y}
            if x != y:
                reasons.append(f"turn #{i + 1}: {key} differs")
        row["latencies"] = {
            k: {"original": a.latencies.get(k), "replay": b.latencies.get(k),
                "delta": (round(b.latencies[k] - a.latencies[k], 1)
                          if k in a.latencies and k in b.latencies else None)}
            for k in LATENCY_KEYS if k in a.latencies or k in b.latencies
        }
        row["t_start"] = {"original": a.t_start, "replay": b.t_start}
        row["match"] = all(row[k]["same"] for k in checks)
        rows.append(row)
    return {"match": not reasons, "reasons": reasons, "turns": rows,
            "counts": {"original": len(original), "replay": len(replay)}}


def compare_sessions(original: str | os.PathLike, replay: str | os.PathLike,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    original, replay = Path(original), Path(replay)
    result = compare_turns(dialogue_turns(original / EVENTS_NAME), dialogue_turns(replay / EVENTS_NAME))
    meta_a, meta_b = read_meta(original), read_meta(replay)
    report = {
        "verdict": "match" if result["match"] else "mismatch",
        "original": {"path": str(original), "session_id": meta_a.get("session_id"), "mode": meta_a.get("mode"),
                     "profile": meta_a.get("profile"), "duration_s": meta_a.get("duration_s")},
        "replay": {"path": str(replay), "session_id": meta_b.get("session_id"), "mode": meta_b.get("mode"),
                   "profile": meta_b.get("profile"), "duration_s": meta_b.get("duration_s")},
        **result,
    }
    if extra:
        report.update(extra)
    return report


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "—"
    return str(value).replace("|", "\\|").replace("\n", " ") or "—"


def render_report_md(report: dict[str, Any]) -> str:
    lines = [f"# Replay report: **{report['verdict'].upper()}**", ""]
    lines.append(f"- original: `{report['original']['path']}` ({report['original'].get('mode') or '?'}, "
                 f"profile {report['original'].get('profile') or '?'})")
    lines.append(f"- replay: `{report['replay']['path']}` (profile {report['replay'].get('profile') or '?'})")
    if report.get("source"):
        lines.append(f"- input fed to the engine: {report['source']}")
    lines.append(f"- dialogue turns: {report['counts']['original']} original, {report['counts']['replay']} replay")
    if report["reasons"]:
        lines += ["", "## Differences", ""] + [f"- {r}" for r in report["reasons"]]
    lines += ["", "## Turns", "",
              "| # | turn | decisions | user text | assistant text | first audio ms (orig → replay) | match |",
              "|---|---|---|---|---|---|---|"]
    for row in report["turns"]:
        if "missing_in" in row:
            lines.append(f"| {row['index']} | {_cell(row['turn']['original'])} → {_cell(row['turn']['replay'])} "
                         f"| missing in the {row['missing_in']} | | | | no |")
            continue

        def pair(key: str) -> str:
            d = row[key]
            if d["same"]:
                return _cell(d["original"])
            return f"{_cell(d['original'])} **≠** {_cell(d['replay'])}"

        lat = row["latencies"].get("first_audio_ms", {})
        lines.append(f"| {row['index']} | {_cell(row['turn']['original'])} → {_cell(row['turn']['replay'])} "
                     f"| {pair('decisions')} | {pair('user_text')} | {pair('assistant_text')} "
                     f"| {_cell(lat.get('original'))} → {_cell(lat.get('replay'))} | {'yes' if row['match'] else 'no'} |")
    lat_rows = [r for r in report["turns"] if r.get("latencies")]
    if lat_rows:
        lines += ["", "## Latencies (ms, from the end of the user's speech)", "",
                  "| # | " + " | ".join(LATENCY_KEYS) + " |", "|---|" + "---|" * len(LATENCY_KEYS)]
        for r in lat_rows:
            cells = []
            for k in LATENCY_KEYS:
                v = r["latencies"].get(k)
                cells.append(f"{_cell(v['original'])} → {_cell(v['replay'])}" if v else "—")
            lines.append(f"| {r['index']} | " + " | ".join(cells) + " |")
        lines += ["", "_Latencies are not part of the verdict: the original ran on its own clock (the wall clock "
                  "when live), the replay on the virtual clock._"]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], folder: str | os.PathLike) -> tuple[Path, Path]:
    folder = Path(folder)
    json_path, md_path = folder / REPORT_JSON, folder / REPORT_MD
    atomic_write_text(json_path, json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", FILE_MODE)
    atomic_write_text(md_path, render_report_md(report), FILE_MODE)
    return json_path, md_path
