"""Scoring a scripted conversation: the script, the scripted user's timeline and the engine's events (as the
dicts of ``events.jsonl``) in, a JSON-ready report out.

How utterances and engine turns are matched: every ``vad_onset`` (``at``: stream seconds, the same clock as the
timeline in file mode) belongs to the utterance whose spoken span, widened by ``ONSET_BEFORE_S`` /
``ONSET_AFTER_S``, contains it; an utterance that got no onset of its own takes the turns that were open when it
began (an input opened earlier, e.g. by echo, that it then continued). Turns matched to no utterance are *stray*
(echo, noise).

Per turn the events give: the final user text (``user_text`` pieces, a ``partial`` replaces, ``full`` on the final
piece wins; the candidate's text before a barge-in is kept apart), the decisions (``turn_decision``), a barge-in
(``interruption`` with this ``turn``), the reply (``assistant_text`` / ``audio_out`` / ``audio_played`` with this
turn as its turn). A user turn *stays in the transcript* when it has text and was not closed with an ``el``
decision (the app shows such turns faintly at most). When a turn carries on into a later utterance (the input
stayed open, e.g. a backchannel followed by a question), its answer, barge-in and transcript count for the later
utterance; the earlier one keeps what happened before the later one began (``shared_with`` names them).

Per utterance, by expectation:

* ``answered``: a reply to one of its turns, with the keywords (any / all) in the reply's text; an utterance with
  pauses must also be one turn (see ``single_turn``).
* ``ignored``: no interruption, no reply, no user turn left in the transcript.
* ``interrupts``: one of its turns interrupted the answer (``interrupt_ms``: the decision time minus the speech
  onset); with keywords, it must also be answered with them.
* ``joins_previous``: with the ``continued`` utterance before it, one user turn: at most ``JOIN_HEARD_S`` of reply
  audio played between the two (a word or two before the assistant stops for the rest of the sentence: on the
  virtual clock of file mode an answer starts the instant the turn is decided, sooner than on any machine; the
  engine's own limit, ``EngineConfig.join_max_played_s``, is the same), at most one reply played for both, and
  (when there is a transcript) the answered turn's text holds at least half the words of each; plus the keywords.
* ``continued``: scored with the utterance that joins it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Iterable

from core.harness.script import ConversationScript
from core.harness.text import keywords_found, normalize, recall, wer

ONSET_BEFORE_S = 0.35      # a VAD onset may come a little before the speech (padding, noise)
ONSET_AFTER_S = 0.25
BARGE_IN_LIMIT_MS = 600.0  # issue 13: a barge-in must interrupt within this of its speech onset
# A barge-in that the assistant's own audio overlapped less than this (the answer ended on its own right after the
# user began, before any VAD could be sure of speech) had nothing to interrupt: it is counted with the ones spoken
# after the answer had ended, whatever happened to it (the same tolerance as a VAD onset's).
BARGE_IN_MIN_OVERLAP_S = ONSET_AFTER_S
# issue 13's "Done when", over the whole suite in both rooms
DONE_WHEN = {"backchannels_min": 20, "backchannel_voices_min": 3, "barge_in_rate_min": 0.9, "barge_in_wer_max": 0.15}
COVERAGE = 0.5             # a joined turn's transcript holds at least this share of each part's words
JOIN_HEARD_S = 1.0         # a joined turn: at most this much of an answer heard while the user paused


def read_events(path: str | Path) -> list[dict]:
    """The events of an ``events.jsonl`` file as dicts (blank lines skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


@dataclass
class _Turn:
    turn: int
    onsets: list[float] = field(default_factory=list)
    closed_t: float | None = None          # first decision (ss or el) closing the input
    decisions: list[dict] = field(default_factory=list)
    text: str = ""
    candidate_text: str = ""               # what was heard of it as a candidate before a barge-in
    barge_in: dict | None = None           # the interruption it caused
    reply_text: str = ""
    reply_audio_s: float = 0.0
    played: list[tuple[float, int, int]] = field(default_factory=list)   # (t, samples, rate) of audio_played
    reply_t: float | None = None           # when its reply began (first assistant text or audio)
    utterances: set[int] = field(default_factory=set)

    @property
    def replied(self) -> bool:
        return bool(self.reply_text.strip()) or self.reply_audio_s > 0

    @property
    def played_s(self) -> float:
        return sum(n / r for _, n, r in self.played if r)

    def played_between(self, t0: float, t1: float) -> float:
        return sum(n / r for t, n, r in self.played if r and t0 < t <= t1)

    @property
    def closed_el(self) -> bool:
        return bool(self.decisions) and self.decisions[-1].get("state") == "el"

    @property
    def in_transcript(self) -> bool:
        """Its words show as a turn: not dropped as noise or a backchannel ("el"); a command that stopped the
        answer ("el" for "command": nothing to answer) stays, as in the app."""
        ignored = self.closed_el and self.decisions[-1].get("reason") != "command"
        return bool(self.text.strip()) and not ignored


def _turns(events: Iterable[dict]) -> dict[int, _Turn]:
    turns: dict[int, _Turn] = {}

    def get(n: Any) -> _Turn:
        n = int(n)
        if n not in turns:
            turns[n] = _Turn(n)
        return turns[n]

    for ev in events:
        kind, t = ev.get("type"), float(ev.get("t", 0.0))
        if "turn" not in ev:
            continue
        if kind == "vad_onset":
            at = ev.get("clock_at")         # the session clock, as every other time here (older logs: stream time)
            get(ev["turn"]).onsets.append(float(at if at is not None else ev.get("at", t)))
        elif kind == "turn_decision":
            tr = get(ev["turn"])
            tr.decisions.append(ev)
            if tr.closed_t is None and not ev.get("barge_in"):
                tr.closed_t = t
            if ev.get("barge_in"):
                tr.candidate_text, tr.text = tr.text, ""     # it is listened to again from its pre-roll
        elif kind == "user_text":
            tr = get(ev["turn"])
            text = str(ev.get("text") or "")
            tr.text = text if ev.get("partial") else tr.text + text
            if ev.get("final") and ev.get("full") is not None:
                tr.text = str(ev["full"])
        elif kind == "interruption":
            tr = get(ev["turn"])
            if ev.get("reason", "barge_in") == "barge_in":
                tr.barge_in = ev
        elif kind == "assistant_text":
            tr = get(ev["turn"])
            tr.reply_text += str(ev.get("text") or "")
            tr.reply_t = t if tr.reply_t is None else tr.reply_t
        elif kind == "audio_out":
            tr = get(ev["turn"])
            tr.reply_audio_s += float(ev.get("seconds") or 0.0)
            tr.reply_t = t if tr.reply_t is None else tr.reply_t
        elif kind == "audio_played":
            if int(ev.get("samples") or 0) > 0:
                get(ev["turn"]).played.append((t, int(ev["samples"]), int(ev.get("rate") or 0)))
    return turns


def _attribute(timeline: list[dict], turns: dict[int, _Turn], offset_s: float) -> None:
    spans = [(i, u["start_s"], u["end_s"]) for i, u in enumerate(timeline) if u.get("start_s") is not None]
    for tr in turns.values():
        for at in tr.onsets:
            at -= offset_s
            best, best_d = None, None
            for i, s, e in spans:
                if s - ONSET_BEFORE_S <= at <= e + ONSET_AFTER_S:
                    d = 0.0 if s <= at <= e else min(abs(at - s), abs(at - e))
                    if best_d is None or d < best_d:
                        best, best_d = i, d
            if best is not None:
                tr.utterances.add(best)
    for i, s, e in spans:
        if any(i in tr.utterances for tr in turns.values()):
            continue
        for tr in turns.values():   # an input opened before the utterance (echo, noise) that it continued
            if tr.onsets and min(tr.onsets) - offset_s < s and (tr.closed_t is None or tr.closed_t - offset_s > s):
                tr.utterances.add(i)


def _one_turn(group: list[_Turn], first_text: str, last_text: str, gap_start: float, gap_end: float,
              offset_s: float) -> dict:
    """Did speech split by a pause (or two utterances) end up as one user turn with one answer?"""
    spoke_over = sum(tr.played_between(gap_start + offset_s, gap_end + offset_s) for tr in group)
    replies = [tr for tr in group if tr.played_s > 0 or tr.replied]
    played = [tr for tr in group if tr.played_s > 0]
    answer = max(replies, key=lambda tr: tr.turn) if replies else None
    coverage = None
    if answer is not None and answer.text.strip():
        coverage = [recall(first_text, answer.text), recall(last_text, answer.text)]
    ok = (answer is not None and spoke_over <= JOIN_HEARD_S and len(played) <= 1
          and (coverage is None or all(c is None or c >= COVERAGE for c in coverage)))
    return {"ok": ok, "answer_turn": answer.turn if answer else None, "played_during_gap_s": round(spoke_over, 3),
            "replies_played": len(played), "coverage": coverage}


def score(script: ConversationScript, timeline: list[dict], events: list[dict], *, offset_s: float = 0.0) -> dict:
    """The report for one conversation (see the module docstring). ``offset_s``: the session-clock time of the
    timeline's zero (0 in file mode); event times are session-clock times (a ``vad_onset``'s ``clock_at``)."""
    turns = _turns(events)
    _attribute(timeline, turns, offset_s)
    by_utt: dict[int, list[_Turn]] = {}
    for tr in sorted(turns.values(), key=lambda x: x.turn):
        for i in tr.utterances:
            by_utt.setdefault(i, []).append(tr)

    results: list[dict] = []
    for i, (u, tl) in enumerate(zip(script.utterances, timeline)):
        group = by_utt.get(i, [])
        spoken = tl.get("start_s") is not None
        transcript = " ".join(t for t in dict.fromkeys(tr.text.strip() for tr in group) if t)
        # A turn that a later utterance continued (the input stayed open) answers, interrupts and stays in the
        # transcript for that later utterance; this one keeps only what happened before the later one began.
        cuts = {tr.turn: _continued_at(tr, i, timeline, offset_s) for tr in group}
        replied = [tr for tr in group if tr.replied and _before(tr.reply_t, cuts[tr.turn])]
        answer_text = " ".join(tr.reply_text.strip() for tr in replied if tr.reply_text.strip())
        barge = [tr.barge_in for tr in group
                 if tr.barge_in is not None and _before(float(tr.barge_in.get("t", 0.0)), cuts[tr.turn])]
        r: dict[str, Any] = {
            "id": u.id, "expect": u.expect, "label": u.label, "text": u.spoken_text, "sound": u.sound,
            "voice": u.voice, "speed": u.speed, "spoken": spoken, "start_s": tl.get("start_s"),
            "end_s": tl.get("end_s"), "timed_out": tl.get("timed_out", False),
            "overlapped": bool(tl.get("assistant_audible_at_start")) or (tl.get("overlap_s") or 0) > 0,
            "overlap_s": float(tl.get("overlap_s") or 0.0),
            "turns": [tr.turn for tr in group], "transcript": transcript,
            "answered": bool(replied), "answer_text": answer_text,
            "answer_played_s": round(sum(tr.played_s for tr in replied), 3),
            "keywords_ok": (keywords_found(answer_text, u.keywords_any, u.keywords_all) if u.has_keywords else None),
            "interrupted": bool(barge), "interrupt_ms": None,
            "left_in_transcript": any(tr.in_transcript and cuts[tr.turn] is None for tr in group),
            "shared_with": sorted({script.utterances[j].id for tr in group for j in tr.utterances if j != i}),
            "decisions": [{k: d.get(k) for k in ("turn", "state", "reason", "barge_in", "candidate") if k in d}
                          for tr in group for d in tr.decisions],
        }
        if barge and spoken:
            r["interrupt_ms"] = round(1000 * (float(barge[0].get("decision_t", barge[0].get("t", 0.0)))
                                              - offset_s - tl["start_s"]), 1)
        if u.sound is None and u.spoken_text:
            w = wer(u.spoken_text, transcript) if transcript else None
            r["wer"] = w["wer"] if w else None
            r["wer_errors"], r["wer_words"] = (w["errors"], w["words"]) if w else (None, len(normalize(u.spoken_text)))
        if len(u.parts) > 1 and spoken:
            parts = tl["parts"]
            r["single_turn"] = _one_turn(group, u.parts[0].text, u.parts[-1].text, parts[0]["end_s"], tl["end_s"],
                                         offset_s)
        results.append(r)

    for i, (u, r) in enumerate(zip(script.utterances, results)):
        if u.expect == "joins_previous" and r["spoken"] and results[i - 1]["spoken"]:
            prev = results[i - 1]
            group = _union(by_utt.get(i - 1, []), by_utt.get(i, []))
            r["joined"] = _one_turn(group, script.utterances[i - 1].spoken_text, u.spoken_text, prev["end_s"],
                                    r["end_s"], offset_s)
            answer = next((tr for tr in group if tr.turn == r["joined"]["answer_turn"]), None)
            if answer is not None:
                r["answered"] = True
                r["answer_text"] = answer.reply_text.strip()
                if u.has_keywords:
                    r["keywords_ok"] = keywords_found(r["answer_text"], u.keywords_any, u.keywords_all)
                if answer.text.strip():
                    r["joined_transcript"] = answer.text.strip()
                    r["joined_wer"] = wer(f"{prev['text']} {u.spoken_text}", answer.text)["wer"]

    for i, (u, r) in enumerate(zip(script.utterances, results)):
        r["ok"] = _ok(u.expect, u.has_keywords, r, results[i + 1] if i + 1 < len(results) else None)

    stray = [tr for tr in turns.values() if tr.onsets and not tr.utterances]
    return {"script": script.name, "utterances": results, "aggregate": _aggregate(results, stray),
            "stray_turns": [{"turn": tr.turn, "onsets": tr.onsets, "text": tr.text, "interrupted": tr.barge_in
                             is not None, "answered": tr.replied} for tr in stray]}


def _continued_at(tr: _Turn, i: int, timeline: list[dict], offset_s: float) -> float | None:
    """The event time at which a later utterance began speaking into turn ``tr`` (None: none did)."""
    later = [j for j in sorted(tr.utterances) if j > i]
    return None if not later else float(timeline[later[0]]["start_s"]) + offset_s


def _before(t: float | None, cut: float | None) -> bool:
    return cut is None or (t is not None and t < cut)


def _union(a: list[_Turn], b: list[_Turn]) -> list[_Turn]:
    seen: dict[int, _Turn] = {tr.turn: tr for tr in a}
    seen.update({tr.turn: tr for tr in b})
    return [seen[k] for k in sorted(seen)]


def _ok(expect: str, has_keywords: bool, r: dict, nxt: dict | None) -> bool:
    if not r["spoken"]:
        return False
    keywords = r["keywords_ok"] is not False
    if expect == "answered":
        return r["answered"] and keywords and r.get("single_turn", {"ok": True})["ok"]
    if expect == "ignored":
        return not (r["interrupted"] or r["answered"] or r["left_in_transcript"])
    if expect == "interrupts":
        return r["interrupted"] and (not has_keywords or (r["answered"] and keywords))
    if expect == "joins_previous":
        return bool(r.get("joined", {}).get("ok")) and keywords
    if expect == "continued":
        return nxt is not None and bool(nxt.get("joined", {}).get("ok"))
    return False


def _pooled_wer(rows: list[dict]) -> float | None:
    words = sum(r.get("wer_words") or 0 for r in rows)
    errors = sum(r["wer_errors"] if r.get("wer_errors") is not None else (r.get("wer_words") or 0) for r in rows)
    return round(errors / words, 4) if words else None


def _overlap_s(r: dict) -> float:
    """How long the assistant was audible during the utterance (reports written before this field: any overlap
    counted in full)."""
    return float(r.get("overlap_s", BARGE_IN_MIN_OVERLAP_S if r["overlapped"] else 0.0))


def _aggregate(results: list[dict], stray: list[_Turn]) -> dict:
    ignored = [r for r in results if r["expect"] == "ignored"]
    backchannels = [r for r in ignored if r["overlapped"]]
    alone = [r for r in ignored if not r["overlapped"]]
    # a barge-in spoken when the assistant was not audible (its answer had already ended), or that the answer
    # overlapped only for a moment, had nothing to interrupt: counted apart, not in the barge-in figures
    over = [r for r in results if r["expect"] == "interrupts" and r["spoken"]]
    barge = [r for r in over if _overlap_s(r) >= BARGE_IN_MIN_OVERLAP_S]
    missed = [r for r in over if _overlap_s(r) < BARGE_IN_MIN_OVERLAP_S]
    lat = [r["interrupt_ms"] for r in barge if r["interrupt_ms"] is not None]
    within = [r for r in barge if r["interrupt_ms"] is not None and r["interrupt_ms"] <= BARGE_IN_LIMIT_MS]
    questions = [r for r in barge if r["keywords_ok"] is not None]
    answered = [r for r in results if r["expect"] == "answered"]
    joins = [r for r in results if r["expect"] == "joins_previous"]
    paused = [r for r in results if "single_turn" in r]

    def ignore_stats(rows: list[dict]) -> dict:
        return {"count": len(rows), "voices": sorted({r["voice"] for r in rows if not r["sound"]}),
                "interruptions": sum(r["interrupted"] for r in rows), "answered": sum(r["answered"] for r in rows),
                "left_in_transcript": sum(r["left_in_transcript"] for r in rows)}

    # false: what the user did not mean as a turn (a backchannel, a noise) or no user at all (echo, noise) stopped
    # the answer; the user's own words that stopped it a little early (a question, a continuation) are not false
    false_interruptions = sum(r["interrupted"] for r in results if r["expect"] == "ignored") + \
        sum(tr.barge_in is not None for tr in stray)
    return {
        "utterances": len(results), "passed": sum(r["ok"] for r in results),
        "ok": all(r["ok"] for r in results),
        "backchannels": ignore_stats(backchannels),
        "ignored_alone": ignore_stats(alone),
        "barge_ins": {
            "count": len(barge), "not_overlapped": len(missed), "interrupted": sum(r["interrupted"] for r in barge),
            "within_600ms": len(within), "within_600ms_rate": round(len(within) / len(barge), 4) if barge else None,
            "latency_ms_p50": round(median(lat), 1) if lat else None, "latency_ms_max": max(lat) if lat else None,
            "wer": _pooled_wer([r for r in barge if "wer_words" in r]),
            "questions": len(questions), "questions_answered": sum(bool(r["keywords_ok"]) for r in questions)},
        "questions": {"count": len(answered), "answered": sum(r["answered"] for r in answered),
                      "keywords_ok": sum(r["keywords_ok"] is not False and r["answered"] for r in answered),
                      "wer": _pooled_wer([r for r in answered if "wer_words" in r])},
        "joins": {"count": len(joins), "joined": sum(bool(r.get("joined", {}).get("ok")) for r in joins)},
        "pauses": {"count": len(paused), "single_turn": sum(r["single_turn"]["ok"] for r in paused)},
        "stray_turns": len(stray), "stray_interruptions": sum(tr.barge_in is not None for tr in stray),
        "stray_answers": sum(tr.replied for tr in stray),
        "false_interruptions": false_interruptions,
        "timed_out_anchors": sum(bool(r["timed_out"]) for r in results),
    }


def combine(reports: list[dict]) -> dict:
    """Suite figures over several conversation reports (e.g. every script in two rooms)."""
    rows = [r for rep in reports for r in rep["utterances"]]
    stray = sum(rep["aggregate"]["stray_turns"] for rep in reports)
    agg = _aggregate(rows, [])
    agg["stray_turns"] = stray
    agg["stray_interruptions"] = sum(rep["aggregate"]["stray_interruptions"] for rep in reports)
    agg["stray_answers"] = sum(rep["aggregate"]["stray_answers"] for rep in reports)
    agg["false_interruptions"] += agg["stray_interruptions"]
    agg["conversations"] = len(reports)
    return agg


def unmet(aggregate: dict, done_when: dict | None = None) -> list[str]:
    """Which of issue 13's acceptance figures an aggregate (of :func:`combine`) misses, one line each (empty: all
    met): >= 20 backchannels in >= 3 voices with 0 interruptions and 0 answers, >= 90 % of barge-ins interrupting
    within 600 ms, barge-in WER <= 15 %, every barge-in question answered."""
    d = dict(DONE_WHEN, **(done_when or {}))
    bc, bi = aggregate["backchannels"], aggregate["barge_ins"]
    out = []
    if bc["count"] < d["backchannels_min"] or len(bc["voices"]) < d["backchannel_voices_min"]:
        out.append(f"backchannels: {bc['count']} in {len(bc['voices'])} voices over the assistant's speech "
                   f"(need {d['backchannels_min']} in {d['backchannel_voices_min']})")
    if bc["interruptions"] or bc["answered"]:
        out.append(f"backchannels: {bc['interruptions']} interrupted, {bc['answered']} answered (need 0 and 0)")
    if bc["left_in_transcript"]:
        out.append(f"backchannels: {bc['left_in_transcript']} left a user turn in the transcript")
    if not bi["count"] or (bi["within_600ms_rate"] or 0.0) < d["barge_in_rate_min"]:
        out.append(f"barge-ins: {bi['within_600ms']} of {bi['count']} interrupted within {BARGE_IN_LIMIT_MS:g} ms "
                   f"(need {d['barge_in_rate_min']:.0%})")
    if bi["wer"] is None or bi["wer"] > d["barge_in_wer_max"]:
        out.append(f"barge-ins: WER {bi['wer']} (need <= {d['barge_in_wer_max']})")
    if bi.get("not_overlapped"):
        out.append(f"barge-ins: {bi['not_overlapped']} spoken after the answer had ended or as it "
                   f"ended (overlapped under {BARGE_IN_MIN_OVERLAP_S:g} s: nothing to interrupt)")
    if bi["questions_answered"] < bi["questions"]:
        out.append(f"barge-ins: {bi['questions_answered']} of {bi['questions']} questions answered")
    return out
