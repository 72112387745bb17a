"""Prices per million tokens, and the cost of a call from the API's reported usage.

Figures are Anthropic's published list prices (5-minute cache writes, which is what
`cache_control: ephemeral` buys); `[pricing."MODEL"]` in jobrunner.toml overrides or adds a
model, so a new model or a price change never has to wait for a release.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million tokens. A model priced by prompt size carries its higher tier in
    `long`, used for calls whose prompt is above `long_above` tokens."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    long_above: int | None = None
    long: Price | None = None

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The tier that applies to a call with this many prompt tokens."""
        if self.long is not None and self.long_above is not None \
                and prompt_tokens > self.long_above:
            return self.long
        return self


def _p(input: float, output: float, cache_write: float, cache_read: float) -> Price:
    return Price(input=input, output=output, cache_write=cache_write, cache_read=cache_read)


_SONNET_4 = _p(3.0, 15.0, 3.75, 0.30)
_SONNET_5 = _p(2.0, 10.0, 2.50, 0.20)
_HAIKU_4 = _p(1.0, 5.0, 1.25, 0.10)
_HAIKU_5_5 = Price(0.10, 0.50, 0.125, 0.01, long_above=100_000,
                   long=_p(0.50, 2.50, 0.625, 0.05))
_OPUS_4 = _p(5.0, 25.0, 6.25, 0.50)
_OPUS_5_5 = _p(4.0, 20.0, 5.0, 0.20)
_FABLE_5 = _p(10.0, 50.0, 12.50, 1.00)
_FABLE_5_1 = _p(10.0, 50.0, 12.50, 0.25)
_FABLE_5_2 = _p(8.0, 40.0, 10.0, 0.20)

# Model ids as the installed SDK lists them (anthropic/types/model.py).
BUILTIN_PRICES: dict[str, Price] = {
    "claude-fable-5-2": _FABLE_5_2,
    "claude-mythos-5-2": _FABLE_5_2,
    "claude-fable-5-1": _FABLE_5_1,
    "claude-mythos-5-1": _FABLE_5_1,
    "claude-fable-5": _FABLE_5,
    "claude-mythos-5": _FABLE_5,
    "claude-opus-5-5": _OPUS_5_5,
    "claude-opus-5": _OPUS_4,
    "claude-sonnet-5-5": _SONNET_5,
    "claude-sonnet-5": _SONNET_5,
    "claude-haiku-5-5": _HAIKU_5_5,
    "claude-opus-4-8": _OPUS_4,
    "claude-opus-4-7": _OPUS_4,
    "claude-opus-4-6": _OPUS_4,
    "claude-opus-4-5": _OPUS_4,
    "claude-opus-4-5-20251101": _OPUS_4,
    "claude-sonnet-4-6": _SONNET_4,
    "claude-sonnet-4-5": _SONNET_4,
    "claude-sonnet-4-5-20250929": _SONNET_4,
    "claude-haiku-4-5": _HAIKU_4,
    "claude-haiku-4-5-20251001": _HAIKU_4,
}

# Replayed turns cost nothing, but are priced like Sonnet so limits can be exercised offline.
REPLAY_PRICE = _SONNET_4


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

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens
            + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
        )


def cost_usd(price: Price, usage: Usage) -> float:
    """Dollar cost of one call."""
    tier = price.for_prompt(usage.prompt_tokens)
    return (
        usage.input_tokens * tier.input
        + usage.output_tokens * tier.output
        + usage.cache_creation_input_tokens * tier.cache_write
        + usage.cache_read_input_tokens * tier.cache_read
    ) / 1_000_000


def worst_case_cost(price: Price, prompt_tokens: int, max_output_tokens: int) -> float:
    """Upper bound of a call before it is made: every prompt token at the dearest input
    rate (a cache write), and the whole output allowance used."""
    tier = price.for_prompt(prompt_tokens)
    per_input = max(tier.input, tier.cache_write, tier.cache_read)
    return (prompt_tokens * per_input + max_output_tokens * tier.output) / 1_000_000
