"""Attribute names of backends that read their own, added to tcc spans on request.

tcc spans carry the OpenTelemetry GenAI names (``gen_ai.*``) and ``tcc.*``. Some
backends show reasoning tokens and cost only under names of their own; a *convention*
adds those names to each tcc span when it ends, from what the span already holds:

* ``"openinference"`` (Arize Phoenix, Arize AX): ``openinference.span.kind`` (``LLM`` for
  a call, ``CHAIN`` for a sampling group or forcing run), ``llm.model_name``,
  ``llm.provider``, ``llm.system``, ``llm.token_count.{prompt,completion,total}``,
  ``llm.token_count.prompt_details.{cache_read,cache_write}``,
  ``llm.token_count.completion_details.reasoning``, ``llm.cost.total``, and
  ``input.value``/``output.value`` when content capture recorded the messages. The names
  come from the ``openinference-semantic-conventions`` package.
* ``"langfuse"``: ``langfuse.observation.type`` (``generation`` for a call, ``chain``
  for a group), ``langfuse.observation.model.name``, ``langfuse.observation.usage_details``
  and ``langfuse.observation.cost_details`` (JSON objects). Langfuse treats usage types
  as disjoint buckets that add up to the total, so ``input`` is the uncached input and
  ``output`` the output without reasoning: ``{"input", "input_cache_read",
  "input_cache_creation", "output", "output_reasoning", "total"}``; cost is
  ``{"total": <USD>}``, which Langfuse prefers to its own price table.

Choose them with ``configure(conventions=[...])`` or ``TCC_CONVENTIONS=openinference,
langfuse``. With none chosen (the default) nothing runs at span end but one check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from opentelemetry.util.types import AttributeValue

from tcc_plugin.telemetry import names

__all__ = [
    "CONVENTIONS",
    "CONVENTIONS_ENV",
    "Convention",
    "Langfuse",
    "OpenInference",
    "activate",
    "active",
    "attributes_for",
    "enabled",
    "resolve",
]

CONVENTIONS_ENV: Final = "TCC_CONVENTIONS"

# gen_ai.provider.name values whose OpenInference provider is named otherwise.
_PROVIDERS: Final = {
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "x_ai": "xai",
    "mistral_ai": "mistralai",
}
_SYSTEMS: Final = frozenset({"openai", "anthropic", "cohere", "mistralai"})
_EMBEDDINGS: Final = "embeddings"


class Convention(Protocol):
    """Maps the attributes of an ending tcc span to a backend's own names."""

    name: str

    def attributes(self, span: Mapping[str, Any]) -> dict[str, AttributeValue]:
        """The attributes to add (an empty dict for none)."""
        ...


def _int(span: Mapping[str, Any], key: str) -> int:
    value = span.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _model(span: Mapping[str, Any]) -> str | None:
    model = span.get(names.RESPONSE_MODEL) or span.get(names.REQUEST_MODEL)
    return model if isinstance(model, str) else None


def _is_call(span: Mapping[str, Any]) -> bool:
    return names.OPERATION_NAME in span


class OpenInference:
    """The OpenInference names Phoenix and Arize read (see the module docstring)."""

    name = "openinference"

    def attributes(self, span: Mapping[str, Any]) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {}
        if not _is_call(span):
            attrs[SpanAttributes.OPENINFERENCE_SPAN_KIND] = OpenInferenceSpanKindValues.CHAIN.value
            return attrs
        kind = (
            OpenInferenceSpanKindValues.EMBEDDING
            if span.get(names.OPERATION_NAME) == _EMBEDDINGS
            else OpenInferenceSpanKindValues.LLM
        )
        attrs[SpanAttributes.OPENINFERENCE_SPAN_KIND] = kind.value
        model = _model(span)
        if model:
            attrs[SpanAttributes.LLM_MODEL_NAME] = model
        provider = span.get(names.PROVIDER_NAME)
        if isinstance(provider, str) and provider:
            provider = _PROVIDERS.get(provider, provider)
            attrs[SpanAttributes.LLM_PROVIDER] = provider
            if provider in _SYSTEMS:
                attrs[SpanAttributes.LLM_SYSTEM] = provider
        if names.USAGE_INPUT_TOKENS in span:
            prompt = _int(span, names.USAGE_INPUT_TOKENS)
            completion = _int(span, names.USAGE_OUTPUT_TOKENS)
            attrs[SpanAttributes.LLM_TOKEN_COUNT_PROMPT] = prompt
            attrs[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION] = completion
            attrs[SpanAttributes.LLM_TOKEN_COUNT_TOTAL] = prompt + completion
            attrs[SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ] = _int(
                span, names.USAGE_CACHE_READ_INPUT_TOKENS
            )
            attrs[SpanAttributes.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE] = _int(
                span, names.USAGE_CACHE_CREATION_INPUT_TOKENS
            )
            attrs[SpanAttributes.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING] = _int(
                span, names.USAGE_REASONING_OUTPUT_TOKENS
            )
        cost = span.get(names.COST_USD)
        if isinstance(cost, (int, float)):
            attrs[SpanAttributes.LLM_COST_TOTAL] = float(cost)
        for source, value_key, mime_key in (
            (names.INPUT_MESSAGES, SpanAttributes.INPUT_VALUE, SpanAttributes.INPUT_MIME_TYPE),
            (names.OUTPUT_MESSAGES, SpanAttributes.OUTPUT_VALUE, SpanAttributes.OUTPUT_MIME_TYPE),
        ):
            text = span.get(source)
            if isinstance(text, str):
                attrs[value_key] = text
                attrs[mime_key] = "application/json"
        return attrs


class Langfuse:
    """The ``langfuse.observation.*`` names Langfuse reads (see the module docstring)."""

    name = "langfuse"

    def attributes(self, span: Mapping[str, Any]) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {}
        if not _is_call(span):
            attrs["langfuse.observation.type"] = "chain"
            return attrs
        embedding = span.get(names.OPERATION_NAME) == _EMBEDDINGS
        attrs["langfuse.observation.type"] = "embedding" if embedding else "generation"
        model = _model(span)
        if model:
            attrs["langfuse.observation.model.name"] = model
        if names.USAGE_INPUT_TOKENS in span:
            total_in = _int(span, names.USAGE_INPUT_TOKENS)
            total_out = _int(span, names.USAGE_OUTPUT_TOKENS)
            cache_read = _int(span, names.USAGE_CACHE_READ_INPUT_TOKENS)
            cache_write = _int(span, names.USAGE_CACHE_CREATION_INPUT_TOKENS)
            reasoning = _int(span, names.USAGE_REASONING_OUTPUT_TOKENS)
            usage = {
                "input": max(total_in - cache_read - cache_write, 0),
                "input_cache_read": cache_read,
                "input_cache_creation": cache_write,
                "output": max(total_out - reasoning, 0),
                "output_reasoning": reasoning,
                "total": total_in + total_out,
            }
            details = {k: v for k, v in usage.items() if v or k in ("input", "output", "total")}
            attrs["langfuse.observation.usage_details"] = json.dumps(details)
        cost = span.get(names.COST_USD)
        if isinstance(cost, (int, float)):
            attrs["langfuse.observation.cost_details"] = json.dumps({"total": float(cost)})
        return attrs


#: The conventions ``configure(conventions=...)`` and ``TCC_CONVENTIONS`` accept.
CONVENTIONS: Final[Mapping[str, Convention]] = {
    convention.name: convention for convention in (OpenInference(), Langfuse())
}

_active: tuple[Convention, ...] = ()


def resolve(given: str | Sequence[str] | None) -> tuple[str, ...]:
    """Convention names from ``given`` (a sequence or comma-separated string), else from
    ``TCC_CONVENTIONS``; deduplicated, in order.

    Raises:
        ValueError: an unknown name, with the list of valid ones.
    """
    if given is None:
        raw = [os.environ.get(CONVENTIONS_ENV, "")]
        source = f"{CONVENTIONS_ENV}="
    else:
        raw = [given] if isinstance(given, str) else list(given)
        source = ""
    resolved: list[str] = []
    for item in raw:
        for part in str(item).split(","):
            name = part.strip().lower()
            if not name or name in resolved:
                continue
            if name not in CONVENTIONS:
                raise ValueError(
                    f"unknown convention {source}{part.strip()!r}; expected one of "
                    f"{', '.join(CONVENTIONS)}"
                )
            resolved.append(name)
    return tuple(resolved)


def activate(chosen: Sequence[str]) -> None:
    """Make ``chosen`` (names from :func:`resolve`) the conventions of the process."""
    global _active
    _active = tuple(CONVENTIONS[name] for name in chosen)


def active() -> tuple[str, ...]:
    """The names of the conventions in effect."""
    return tuple(convention.name for convention in _active)


def enabled() -> bool:
    """Whether any convention is active (the common case, none, costs this check)."""
    return bool(_active)


def attributes_for(span: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """What the active conventions add to a span with ``span``'s attributes."""
    attrs: dict[str, AttributeValue] = {}
    for convention in _active:
        attrs.update(convention.attributes(span))
    return attrs
