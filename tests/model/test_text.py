"""Sentence segmentation (bin/inference.py and bin/server.py rules) and post_process (docs/freeze-omni.md,
"Speaking: sentence segments" and "Text post-processing")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _paths import TINY_A, TINY_A_EXPECTED
from core.model.freeze_omni.text import SentenceSegmenter, post_process

META = json.loads((TINY_A_EXPECTED / "meta.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- post_process
@pytest.mark.parametrize("segment", META["main"]["segments"])
def test_post_process_fixture_segments(segment: dict) -> None:
    assert post_process(segment["text_raw"]) == segment["text"]


@pytest.mark.parametrize("raw, processed", [
    ("a、b（c）(d)", "a，b，c，,d。"),
    ("line\none\r\ttwo", "lineonetwo。"),
    ("**bold** _x_ `code` ~y~", "bold x code y。"),
    ("Hi.   There:  you", "Hi.There:you。"),
    ("Steps: 1. open 2. close", "Steps:1:open 2:close。"),
    ("步骤 1. 打开 2. B", "步骤 1：打开 2：B。"),
    ("Pi is 3.14", "Pi is 3:14。"),      # quirk of the original: a digit is a \w, so decimals look like list numbers
    ("圆周率 3.14", "圆周率 3.14。"),      # with CJK text only a CJK or ASCII letter may follow
    ("Done!", "Done!"),
    ("Really?", "Really?"),
    ("好的。", "好的。"),
    ("and then,", "and then。"),
    ("然后；", "然后。"),
    ("note:", "note。"),
    ("hello", "hello。"),
    ("", ""),
])
def test_post_process_rules(raw: str, processed: str) -> None:
    assert post_process(raw) == processed


# --------------------------------------------------------------------------------------------- segmentation
def _fixture_steps() -> list[str]:
    """Cumulative decoded text after each LLM step of the fixture reply (the tokenizer of the fixture's tiny LLM)."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(TINY_A / "llm" / "tokenizer.json"))
    ids = META["main"]["past_tokens"]
    return [tok.decode(ids[: i + 1], skip_special_tokens=False) for i in range(len(ids))]


def test_offline_rule_reproduces_fixture_segments() -> None:
    texts = _fixture_steps()
    hidden = np.load(TINY_A_EXPECTED / "generate.npz")["gen_hidden"]
    seg = SentenceSegmenter("offline")
    out = []
    assert seg.push(0, None) is None  # the 'ss' step: hidden state only
    for i in range(1, len(texts)):
        cut = seg.push(i, texts[i])
        if cut is not None:
            out.append(cut)
    rest = seg.flush()
    assert rest is not None and seg.flush() is None
    out.append(rest)
    expected = META["main"]["segments"]
    assert [s.text for s in out] == [s["text_raw"] for s in expected]
    assert [len(s.hidden) for s in out] == [s["n_llm_hidden"] for s in expected]
    start = 0
    for i, s in enumerate(out):
        want = np.load(TINY_A_EXPECTED / f"segment{i}.npz")["llm_hidden"]
        np.testing.assert_array_equal(hidden[s.hidden], want)  # indices -> the segment's hidden states
        assert s.hidden == list(range(start, start + len(s.hidden)))
        start += len(s.hidden)


def _feed(seg: SentenceSegmenter, pieces: list[str]) -> list[str]:
    """Feed text pieces (one per step, after an 'ss' step) and return the cut texts, plus the flushed rest."""
    out, text = [], ""
    seg.push("h0", None)
    for i, piece in enumerate(pieces, 1):
        text += piece
        cut = seg.push(f"h{i}", text)
        if cut is not None:
            out.append(cut.text)
    rest = seg.flush()
    if rest is not None:
        out.append("|" + rest.text)
    return out


def test_offline_rule_cases() -> None:
    assert _feed(SentenceSegmenter("offline"), ["Hello", ",", " you", ".", " Next", "!"]) == ["Hello, you.", " Next!"]
    assert _feed(SentenceSegmenter("offline"), ["Step 1", ".", " go", "\n", "end"]) == ["Step 1. go\n", "|end"]
    assert _feed(SentenceSegmenter("offline"), ["好", "。", "对", "？"]) == ["好。", "对？"]
    # The first step's text (from the 'ss' step) is only examined at the next step, as in the original.
    seg = SentenceSegmenter("offline")
    seg.push("h0", None)
    assert seg.push("h1", ".") is not None  # "." with nothing before: no digit, no IndexError
    assert seg.state.hidden == []


def test_server_rule_wide_set_min_states_and_audio() -> None:
    # No audio yet: "," cuts, but only with >= 4 hidden states.
    assert _feed(SentenceSegmenter("server"), ["a", ","]) == ["|a,"]
    assert _feed(SentenceSegmenter("server"), ["a", "b", "c", ","]) == ["abc,"]
    # Once the reply has audio, the narrow set applies until 20 states are pending.
    seg = SentenceSegmenter("server")
    seg.push("h0", None)
    text = ""
    for i, piece in enumerate(["a", "b", "c", "."], 1):
        text += piece
        cut = seg.push(i, text)
    assert cut is not None and cut.text == "abc."
    seg.note_audio()
    cuts = []
    for i in range(5, 40):
        text += "," if i % 2 else "x"
        cut = seg.push(i, text)
        if cut is not None:
            cuts.append(len(cut.hidden))
    assert cuts and cuts[0] == 21  # first "," reached with >= 20 states (states 5..25)
    # "." after a digit never cuts.
    assert _feed(SentenceSegmenter("server"), ["x", "y", "1", "."]) == ["|xy1."]


def test_server_rule_incomplete_character() -> None:
    """A delta with U+FFFD is not consumed; the next step's delta contains the whole character."""
    seg = SentenceSegmenter("server")
    seg.push("h0", None)
    assert seg.push("h1", "ab") is None
    assert seg.push("h2", "abc\ufffd") is None
    assert seg.state.last_text == "ab" and seg.state.text == "ab"  # "c\ufffd" is not consumed
    cut = seg.push("h3", "abc好。")
    assert cut is not None and cut.text == "abc好。" and cut.hidden == ["h0", "h1", "h2", "h3"]


def test_offline_rule_ignores_replacement_character() -> None:
    seg = SentenceSegmenter("offline")
    seg.push("h0", None)
    seg.push("h1", "a\ufffd")
    assert seg.state.text == "a\ufffd"  # bin/inference.py has no such check


def test_reset_and_bad_rule() -> None:
    seg = SentenceSegmenter("server")
    seg.push("h0", "x")
    seg.note_audio()
    seg.reset()
    assert seg.state.hidden == [] and seg.state.audio_pieces == 0 and seg.flush() is None
    with pytest.raises(ValueError):
        SentenceSegmenter("other")  # type: ignore[arg-type]
