"""Prompt rendering and tokenisation shared by every engine, so all engines see the same tokens.

The chat template is applied by the Hugging Face tokenizer of the variant (with the generation
prompt); a single ``completion`` message is used as plain text. Continuations for log-likelihood
scoring are appended to the rendered prompt and scored from the longest common token prefix on,
because tokens may merge across the boundary.
"""

from __future__ import annotations

from typing import Any

from trust.types import Message


class PromptTokens:
    """Renders chat messages and cuts generated tokens at stop tokens, for one tokenizer."""

    def __init__(self, tokenizer: Any, extra_stop_ids: Any = None) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = _stop_ids(tokenizer, extra_stop_ids)

    def text(self, messages: list[Message]) -> str:
        """The chat-templated prompt, or the plain text of a single ``completion`` message."""
        if len(messages) == 1 and messages[0].get("role") == "completion":
            return messages[0]["content"]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; the chat template already holds any special tokens the model needs."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        return self.encode(self.text(messages))

    def continuation_sequences(
        self, messages: list[Message], continuations: list[str]
    ) -> tuple[list[int], list[tuple[list[int], int]]]:
        """The prompt's ids and, per continuation, ``(full ids, number of tokens to score)``."""
        prompt_text = self.text(messages)
        prompt_ids = self.encode(prompt_text)
        if not prompt_ids:
            raise ValueError("the chat template produced an empty prompt")
        sequences = []
        for continuation in continuations:
            full = self.encode(prompt_text + continuation)
            common = 0
            for a, b in zip(prompt_ids, full):
                if a != b:
                    break
                common += 1
            common = max(1, common)  # the first token has no prediction to score
            sequences.append((full, max(0, len(full) - common)))
        return prompt_ids, sequences

    def cut_at_stop(self, tokens: list[int]) -> list[int]:
        """The generated tokens before the first stop (eos/pad) token."""
        for i, tok in enumerate(tokens):
            if tok in self.stop_ids:
                return list(tokens[:i])
        return list(tokens)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True).strip()


def _stop_ids(tokenizer: Any, extra: Any) -> set[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, tokenizer.pad_token_id, extra):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple, set)):
            ids.update(v for v in value if isinstance(v, int))
    return ids
