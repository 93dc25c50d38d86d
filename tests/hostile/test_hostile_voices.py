"""Piper voices are checked when they load: absurd inference values, an empty phoneme map or an ONNX model that is
not a Piper voice give one line naming the file, not gigabytes of audio, silence or an internal error later
(issue 15, item 10). The real bundled voice is used with edited copies of its config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.model.lite.errors import LiteError   # the voice module's own error (the backend turns it into BackendError)


@pytest.fixture(scope="module")
def joe() -> Path:
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from core.model.lite import weights

    if weights.missing_packages():
        pytest.skip("the Lite weight packages are not installed")
    return weights.weight_file(weights.PIPER_JOE)


def edited_config(joe: Path, folder: Path, edit) -> Path:
    config = json.loads(Path(str(joe) + ".json").read_text())
    edit(config)
    path = folder / "voice.onnx.json"
    path.write_text(json.dumps(config))
    return path


def load(joe: Path, config: Path):
    from core.model.lite.tts import PiperVoice

    return PiperVoice(joe, config)


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    text = str(exc.value)
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)


def test_the_bundled_voice_passes_the_checks(joe, tmp_path):
    voice = load(joe, edited_config(joe, tmp_path, lambda c: None))
    assert voice.sample_rate == 22050


@pytest.mark.parametrize("key,value", [
    ("length_scale", 200), ("length_scale", 0), ("length_scale", -1), ("noise_scale", 50), ("noise_w", -3),
    ("length_scale", "NaN"),
])
def test_absurd_inference_values_are_refused(joe, tmp_path, key, value):
    def edit(c):
        c["inference"][key] = float(value) if value == "NaN" else value

    config = edited_config(joe, tmp_path, edit)
    with pytest.raises(LiteError) as exc:
        load(joe, config)
    one_line(exc, str(config), key)


@pytest.mark.parametrize("what", ["empty", "only-specials", "negative-id", "id-past-the-symbols"])
def test_an_unusable_phoneme_map_is_refused(joe, tmp_path, what):
    def edit(c):
        m = c["phoneme_id_map"]
        if what == "empty":
            c["phoneme_id_map"] = {}
        elif what == "only-specials":
            c["phoneme_id_map"] = {k: m[k] for k in ("^", "$", "_")}
        elif what == "negative-id":
            m["a"] = [-5]
        else:
            m["a"] = [c["num_symbols"] + 10]

    config = edited_config(joe, tmp_path, edit)
    with pytest.raises(LiteError) as exc:
        load(joe, config)
    one_line(exc, str(config), "phoneme_id_map")


def test_a_sample_rate_from_nowhere_is_refused(joe, tmp_path):
    config = edited_config(joe, tmp_path, lambda c: c["audio"].update(sample_rate=1))
    with pytest.raises(LiteError) as exc:
        load(joe, config)
    one_line(exc, str(config), "sample_rate")


def _tiny_onnx(path: Path, inputs: list[tuple[str, int]]) -> None:
    """A small valid ONNX model that is not a Piper voice: its outputs are its inputs cast to float."""
    import onnx
    from onnx import TensorProto, helper

    graph_inputs = [helper.make_tensor_value_info(name, dtype, None) for name, dtype in inputs]
    outputs = [helper.make_tensor_value_info(f"out_{name}", TensorProto.FLOAT, None) for name, _ in inputs]
    nodes = [helper.make_node("Cast", [name], [f"out_{name}"], to=TensorProto.FLOAT) for name, _ in inputs]
    model = helper.make_model(helper.make_graph(nodes, "not-piper", graph_inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8    # what the installed onnxruntime reads
    onnx.save(model, str(path))


@pytest.mark.parametrize("inputs", [
    [("pixel_values", 1)],                                                      # an image model
    [("input", 7), ("input_lengths", 7)],                                       # no scales
    [("input", 1), ("input_lengths", 7), ("scales", 1)],                        # ids as float
    [("input", 7), ("input_lengths", 7), ("scales", 1), ("temperature", 1)],   # an input Piper never feeds
])
def test_an_onnx_model_that_is_not_a_piper_voice_is_refused(joe, tmp_path, inputs):
    from core.model.lite.tts import PiperVoice

    model = tmp_path / "impostor.onnx"
    _tiny_onnx(model, inputs)
    shutil.copy(str(joe) + ".json", str(model) + ".json")
    with pytest.raises(LiteError) as exc:
        PiperVoice(model)
    one_line(exc, str(model))
