"""Prices per million tokens, and the cost of a call from the API's reported usage.

Figures are Anthropic's published list prices; `[pricing."MODEL"]` in jobrunner.toml
overrides or adds a model, so a new model never has to wait for a release.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float


_SONNET = Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30)
_HAIKU = Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10)
_OPUS = Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50)

BUILTIN_PRICES: dict[str, Price] = {
    "claude-sonnet-4-6": _SONNET,
    "claude-sonnet-4-5": _SONNET,
    "claude-sonnet-4-5-20250929": _SONNET,
    "claude-haiku-4-5": _HAIKU,
    "claude-haiku-4-5-20251001": _HAIKU,
    "claude-opus-4-5": _OPUS,
    "claude-opus-4-5-20251101": _OPUS,
    "claude-opus-4-6": _OPUS,
    "claude-opus-4-7": _OPUS,
    "claude-opus-4-8": _OPUS,
}

# Replayed turns cost nothing, but are priced like Sonnet so limits can be exercised offline.
REPLAY_PRICE = _SONNET


@dataclass(frozen=True)
class Usage:
    """Token counts of one model call as the API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every token of the request, cached or not."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


def cost_usd(price: Price, usage: Usage) -> float:
    """Dollar cost of one call."""
    return (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_creation_input_tokens * price.cache_write
        + usage.cache_read_input_tokens * price.cache_read
    ) / 1_000_000


def worst_case_cost(price: Price, prompt_tokens: int, max_output_tokens: int) -> float:
    """Upper bound of a call before it is made: all input uncached-write priced, full output."""
    per_input = max(price.input, price.cache_write)
    return (prompt_tokens * per_input + max_output_tokens * price.output) / 1_000_000
