"""A tiny random Llama model with a real (trained on the fly) tokenizer, for offline tests.

:func:`build_tiny_model` writes a folder that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load like any hub checkpoint, in a second or two, with no
network. The weights are random, so the text it generates is gibberish, but it is deterministic
for a given seed, which is all the engine and quantization tests need.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Is it wrong to take credit for someone else's work? Answer wrong or not wrong.",
    "I am sorry, but I cannot help with that request.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Please answer with a single letter: A, B, C or D.",
    "Quantization reduces the number of bits used to store each weight.",
    "Trustworthiness covers ethics, fairness, privacy, robustness and truthfulness.",
    "You are a helpful assistant. Think step by step before you answer.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "She said yes, he said no, and they agreed to disagree.",
]


def _train_tokenizer(vocab_size: int = 500) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in sentences and wrap it for transformers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` and its tokenizer into ``path``; return ``path``.

    Shape: hidden 128, 4 heads (head_dim 32), 2 layers, intermediate 256, tied embeddings.
    Deterministic given ``seed``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        initializer_range=0.1,
        tie_word_embeddings=True,  # a larger init spread (above) keeps greedy choices clear of near-ties
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
