"""Token usage of one LLM call, normalised across providers."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tcc_plugin.errors import UsageError

__all__ = ["BilledStep", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one call consumed, in the OpenTelemetry GenAI sense.

    ``input`` is *all* input tokens, cached and cache-writing ones included
    (``cached_input`` and ``cache_write`` are parts of it). ``output`` is all
    output tokens, reasoning included (``reasoning`` is a part of it, never added on
    top). ``cache_write_1h`` is the part of ``cache_write`` written with a one-hour
    time-to-live (Anthropic prices it apart from the five-minute writes).
    """

    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    output: int = 0
    reasoning: int = 0

    def __post_init__(self) -> None:
        # One combined check first (every call builds a Usage or two); the loop below
        # runs only to say what is wrong.
        i, ci, cw, cw1, o, r = (
            self.input,
            self.cached_input,
            self.cache_write,
            self.cache_write_1h,
            self.output,
            self.reasoning,
        )
        if (
            type(i) is int
            and type(ci) is int
            and type(cw) is int
            and type(cw1) is int
            and type(o) is int
            and type(r) is int
            and 0 <= cw1 <= cw
            and 0 <= r <= o
            and ci >= 0
            and ci + cw <= i
        ):
            return
        for name in _FIELDS:
            value = getattr(self, name)
            if type(value) is not int:  # bool and int subclasses are not token counts
                raise UsageError(
                    f"Usage.{name} must be an int token count, got {type(value).__name__} {value!r}"
                )
            if value < 0:
                raise UsageError(f"Usage.{name} must be >= 0, got {value}")
        if self.cached_input + self.cache_write > self.input:
            raise UsageError(
                f"cached_input ({self.cached_input}) + cache_write ({self.cache_write}) exceed "
                f"input ({self.input}): input counts all input tokens, cached ones included"
            )
        if self.cache_write_1h > self.cache_write:
            raise UsageError(
                f"cache_write_1h ({self.cache_write_1h}) exceeds cache_write ({self.cache_write})"
            )
        if self.reasoning > self.output:
            raise UsageError(
                f"reasoning ({self.reasoning}) exceeds output ({self.output}): "
                "reasoning tokens are a part of output"
            )

    @property
    def total(self) -> int:
        """Input plus output tokens (reasoning is already inside output)."""
        return self.input + self.output

    @property
    def uncached_input(self) -> int:
        """Input tokens billed at the full input price."""
        return self.input - self.cached_input - self.cache_write

    @property
    def visible_output(self) -> int:
        """Output tokens that are not reasoning."""
        return self.output - self.reasoning

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input=self.input + other.input,
            cached_input=self.cached_input + other.cached_input,
            cache_write=self.cache_write + other.cache_write,
            cache_write_1h=self.cache_write_1h + other.cache_write_1h,
            output=self.output + other.output,
            reasoning=self.reasoning + other.reasoning,
        )

    def __radd__(self, other: object) -> Usage:
        # Lets ``sum(usages)`` start from the int 0.
        if other == 0:
            return self
        return self.__add__(other)

    def __bool__(self) -> bool:
        return self.total > 0

    def as_dict(self) -> dict[str, Any]:
        """The counts as a plain dict (for JSON and span attributes)."""
        return {name: getattr(self, name) for name in _FIELDS}


@dataclass(frozen=True, slots=True)
class BilledStep:
    """A step a provider billed inside one call besides the call's own tokens (an
    Anthropic ``usage.iterations`` entry such as a context compaction or an advisor
    sub-call), priced at ``model``'s price (``None``: the call's model)."""

    kind: str
    usage: Usage
    model: str | None = None


_FIELDS = tuple(f.name for f in fields(Usage))
ZERO = Usage()
