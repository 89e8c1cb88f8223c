"""Settings of the Hugging Face transformers engine (plain pydantic, from a model's ``hf:`` section).

They change how fast answers and scores are computed, never what they are: none of them is part
of a variant's or a shard's key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HFSettings(BaseModel):
    """How one model is served by transformers."""

    model_config = ConfigDict(extra="forbid")

    prefix_scoring: bool = Field(
        True,
        description="multiple-choice scoring runs each shared prompt prefix once and scores every option from its "
        "cache (false: every option as a full sequence, the slower original path)",
    )
    prefix_generation: bool = Field(
        True,
        description="generation runs the prompt prefix shared by a shard's items (system prompt, demonstrations) "
        "once and starts every batch from its cache",
    )
    score_token_budget: int = Field(
        16384, ge=256, description="most cached + new token positions per scoring forward pass (bounds memory)"
    )
    min_shared_tokens: int = Field(
        16, ge=1, description="a prefix shared by a shard's prompts is cached only when at least this long"
    )
