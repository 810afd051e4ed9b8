"""Tiny random llama-style models with an in-memory tokenizer, saved to a folder: no downloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CHAT_TEMPLATE", "EOS", "build_tiny_llama"]

EOS = "</s>"
BOS = "<s>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a local model answers every task of the project",
    "tokens stream from the worker thread to the event loop",
    "<|user|> <|assistant|> <|system|> hello world, 0123456789.",
]


def _tokenizer(vocab_size: int, chat_template: str | None) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS)
    if chat_template is not None:
        wrapped.chat_template = chat_template
    return wrapped


def _config(tokenizer: Any, hidden_size: int, layers: int, vocab_size: int) -> dict[str, Any]:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "intermediate_size": hidden_size * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": max(vocab_size, len(tokenizer)),
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "torch_dtype": "float32",
    }


def _save_tokenizer(tokenizer: Any, path: Path) -> None:
    tokenizer.save_pretrained(str(path))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.eos_token_id}))


def build_tiny_llama(
    path: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 320,
    chat_template: str | None = None,
    seed: int = 0,
    suppress_eos: bool = True,
) -> Path:
    """Save a random llama (MLX weights) and its tokenizer under ``path``; return ``path``.

    With ``suppress_eos`` the output row of the end-of-sequence token is zeroed, so
    greedy decoding practically never ends early and tests control length with
    ``max_tokens`` and stop sequences.
    """
    import mlx.core as mx
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model

    tokenizer = _tokenizer(vocab_size, chat_template)
    config = _config(tokenizer, hidden_size, layers, vocab_size)
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    if suppress_eos:
        weight = model.lm_head.weight
        model.lm_head.weight = weight * (mx.arange(weight.shape[0]) != tokenizer.eos_token_id)[:, None]
    mx.eval(model.parameters())
    path.mkdir(parents=True, exist_ok=True)
    save_model(path, model)
    save_config(config, path / "config.json")
    _save_tokenizer(tokenizer, path)
    return path


def build_tiny_hf_llama(
    path: Path,
    *,
    hidden_size: int = 256,
    layers: int = 2,
    vocab_size: int = 320,
    chat_template: str | None = None,
    seed: int = 0,
) -> Path:
    """The same kind of model in Hugging Face format (torch weights), for vLLM; end token suppressed.

    ``hidden_size`` 256 over 4 heads gives a head size of 64, which every vLLM attention backend supports.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer(vocab_size, chat_template)
    config = _config(tokenizer, hidden_size, layers, vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures",)}))
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    model.save_pretrained(str(path), safe_serialization=True)
    _save_tokenizer(tokenizer, path)
    return path
