"""Anthropic: budgets, prices and traces for ``anthropic.Anthropic`` / ``AsyncAnthropic``.

``instrument(client)`` covers ``messages.create`` (and ``beta.messages.create``), sync,
async and streamed (``stream=True``), and the helpers built on the same endpoint
(``messages.stream()`` with ``get_final_message()``, ``messages.parse``). Bedrock,
Vertex and Foundry clients are covered alike.

Translation rules (the adapter below):

- worst case: ``max_tokens`` (required by the API); extended thinking's
  ``budget_tokens`` is the thinking cap. A budget in ``clamp`` mode lowers
  ``max_tokens`` and scales ``budget_tokens`` with it (keeping thinking's share of the
  output, below ``max_tokens``, and within a ``reasoning_tokens`` limit); when fewer
  than the API's minimum of 1,024 thinking tokens would remain, thinking is turned off
  for the call (``{"type": "disabled"}``) rather than the call refused;
- usage: ``input_tokens`` excludes cached tokens, so input is ``input_tokens +
  cache_read_input_tokens + cache_creation_input_tokens``; the 1-hour share of the
  cache writes (``cache_creation.ephemeral_1h_input_tokens``) is priced apart; thinking
  is ``output_tokens_details.thinking_tokens``, a part of ``output_tokens``;
- thinking: on models that take a thinking budget (Claude 3.7 to 4.5) a neutral budget
  becomes ``thinking={"type": "enabled", "budget_tokens": N}`` (tokens as given, below
  ``max_tokens``; an effort level as its :data:`~tcc_plugin.instrument.EFFORT_TOKENS`,
  at most three quarters of ``max_tokens``); from Claude 4.6 on (where
  ``budget_tokens`` is deprecated, and rejected from 4.7) it becomes
  ``thinking={"type": "adaptive"}`` with ``output_config.effort``. It is not applied to
  requests that set ``thinking`` themselves, or set what thinking forbids
  (``temperature`` other than 1, ``top_k``, a forced ``tool_choice``), or to models
  without thinking.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal, TypeVar

try:
    import anthropic
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "tcc_plugin.integrations.anthropic needs the Anthropic SDK: "
        "pip install 'tcc-plugin[anthropic]'"
    ) from exc

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai

from tcc_plugin.adapter import AttributeValue, CallInfo, Clamp, ErrorInfo
from tcc_plugin.instrument import EFFORT_TOKENS, Effort, Thinking, check_thinking
from tcc_plugin.pricing import PriceBook
from tcc_plugin.retry import RetryPolicy

from ._common import (
    Config,
    PostAdapter,
    PostRequest,
    classify_status,
    estimate_input_tokens,
    install,
    model_dump,
    uninstall,
)
from ._sdk_spans import sdk_spans

__all__ = [
    "MIN_THINKING_TOKENS",
    "MessagesAdapter",
    "classify_error",
    "claude_version",
    "instrument",
    "thinking_form",
    "uninstrument",
]

logger = logging.getLogger("tcc_plugin.integrations.anthropic")

ClientT = TypeVar("ClientT")

MIN_THINKING_TOKENS: Final = 1024
"""The smallest ``thinking.budget_tokens`` the API accepts."""

_ADAPTIVE_FROM: Final = (4, 6)
_THINKING_FROM: Final = (3, 7)
_ADAPTIVE_FAMILIES: Final = ("mythos", "fable")  # adaptive-only families
_ANTHROPIC_EFFORTS: Final = frozenset({"low", "medium", "high", "xhigh", "max"})
_TOKEN_EFFORTS: Final[tuple[Effort, ...]] = ("high", "medium", "low")
# The HTTP status an error event inside a stream stands for (the stream itself was 200).
_ERROR_TYPE_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_REQUEST_ATTRIBUTES: Final = {
    "temperature": _gen_ai.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": _gen_ai.GEN_AI_REQUEST_TOP_P,
    "top_k": _gen_ai.GEN_AI_REQUEST_TOP_K,
    "stop_sequences": _gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES,
}
_VERSION_PART = re.compile(r"\d{1,2}")


def claude_version(model: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a Claude model id, wherever the numbers sit
    (``claude-sonnet-4-5-20250929``, ``claude-3-7-sonnet-latest``, Bedrock's
    ``anthropic.claude-opus-4-6-v1``); ``None`` when it names no version."""
    if not model:
        return None
    name = model.lower()
    start = name.find("claude")
    if start < 0:
        return None
    numbers: list[int] = []
    for part in re.split(r"[-_@:]", name[start:])[1:]:
        if _VERSION_PART.fullmatch(part):
            numbers.append(int(part))
            if len(numbers) == 2:
                break
        elif numbers:
            break  # the version's numbers are adjacent; a date or "v1" ends them
    if not numbers:
        return None
    return numbers[0], numbers[1] if len(numbers) > 1 else 0


def thinking_form(model: str | None) -> Literal["adaptive", "budget"] | None:
    """How ``model`` takes a thinking budget: ``"adaptive"`` (``thinking.type
    "adaptive"`` + ``output_config.effort``, Claude 4.6 on), ``"budget"``
    (``budget_tokens``, Claude 3.7 to 4.5), or ``None`` (no thinking, or unknown)."""
    version = claude_version(model)
    if version is None:
        name = (model or "").lower()
        return "adaptive" if any(f"-{f}" in name for f in _ADAPTIVE_FAMILIES) else None
    if version >= _ADAPTIVE_FROM:
        return "adaptive"
    if version >= _THINKING_FROM:
        return "budget"
    return None


def _adaptive_effort(thinking: Thinking) -> str:
    if isinstance(thinking, str):
        return thinking if thinking in _ANTHROPIC_EFFORTS else "low"  # minimal -> low
    for level in _TOKEN_EFFORTS:
        if thinking >= EFFORT_TOKENS[level]:
            return level
    return "low"


def _budget_tokens(thinking: Thinking, max_tokens: int) -> int | None:
    if max_tokens <= MIN_THINKING_TOKENS:
        return None  # budget_tokens must be at least 1,024 and below max_tokens
    if isinstance(thinking, str):
        cap = max(MIN_THINKING_TOKENS, max_tokens * 3 // 4)  # leave room for the answer
        return max(MIN_THINKING_TOKENS, min(EFFORT_TOKENS[thinking], cap))
    return max(MIN_THINKING_TOKENS, min(thinking, max_tokens - 1))


def _forbids_thinking(request: PostRequest) -> bool:
    temperature = request.get("temperature")
    if temperature is not None and temperature != 1:
        return True
    if request.get("top_k") is not None:
        return True
    choice = request.get("tool_choice")
    return isinstance(choice, Mapping) and choice.get("type") in ("any", "tool")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- errors --------------------------------------------------------------------------------
def classify_error(error: BaseException) -> ErrorInfo | None:
    """How the retry layer should treat an exception of the Anthropic SDK."""
    if isinstance(error, anthropic.APITimeoutError):
        return ErrorInfo(True, "timeout")
    if isinstance(error, anthropic.APIConnectionError):
        return ErrorInfo(True, "connection")
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        if status < 400:  # an error event inside a stream: its type says what it was
            mapped = _ERROR_TYPE_STATUS.get(str(error.type), 400)
            return classify_status(mapped)
        return classify_status(status, error.response.headers)
    if isinstance(error, anthropic.APIResponseValidationError):
        return ErrorInfo(False, "malformed", error.status_code)
    if isinstance(error, anthropic.RetryableError):  # raised by middleware to ask for a retry
        return ErrorInfo(True, "server")
    return None


# -- the adapter ---------------------------------------------------------------------------
class MessagesAdapter(PostAdapter):
    """``POST /v1/messages`` (``create``, ``stream``, ``parse``; ``beta.messages`` too)."""

    path = "/v1/messages"
    # What the SDK's own span reads from the response headers, under the same names.
    response_headers: ClassVar[Mapping[str, str]] = {
        "anthropic.request.id": "request-id",
        "anthropic.organization.id": "anthropic-organization-id",
        "anthropic.workspace.id": "anthropic-workspace-id",
    }

    def adjust(self, request: PostRequest, thinking: Thinking | None) -> PostRequest:
        if thinking is None or thinking in (0, "none") or request.get("thinking") is not None:
            return request
        model = request.get("model")
        form = thinking_form(model if isinstance(model, str) else None)
        if form is None:
            return request
        if _forbids_thinking(request):
            logger.debug("thinking budget not applied: the request sets what thinking forbids")
            return request
        if form == "adaptive":
            config = request.get("output_config")
            base = dict(config) if isinstance(config, Mapping) else {}
            if base.get("effort") is None:
                base["effort"] = _adaptive_effort(thinking)
            return request.with_fields(thinking={"type": "adaptive"}, output_config=base)
        max_tokens = _int(request.get("max_tokens"))
        budget = _budget_tokens(thinking, max_tokens) if max_tokens is not None else None
        if budget is None:
            return request
        return request.with_fields(thinking={"type": "enabled", "budget_tokens": budget})

    def describe(self, request: PostRequest) -> CallInfo:
        model = request.get("model")
        thinking = request.get("thinking")
        budget: int | None = None
        attrs: dict[str, AttributeValue] = self.attributes(request, _REQUEST_ATTRIBUTES)
        if isinstance(thinking, Mapping):
            if thinking.get("type") == "enabled":
                budget = _int(thinking.get("budget_tokens"))
                if budget is not None:
                    attrs["tcc.request.reasoning.budget_tokens"] = budget
            kind = thinking.get("type")
            if isinstance(kind, str):
                attrs["tcc.request.thinking"] = kind
        config = request.get("output_config")
        effort = config.get("effort") if isinstance(config, Mapping) else None
        if isinstance(effort, str):
            attrs["tcc.request.reasoning.effort"] = effort
        messages = request.get("messages")
        return CallInfo(
            model=model if isinstance(model, str) else None,
            provider=self.provider,
            operation=self.operation,
            max_output_tokens=_int(request.get("max_tokens")),
            max_reasoning_tokens=budget,
            input_estimate=lambda: estimate_input_tokens(
                request.get("system"), messages=messages, schemas=request.get("tools")
            ),
            stream=request.stream,
            server_address=self.server_address,
            server_port=self.server_port,
            attributes=attrs,
            input_messages=messages,
        )

    def clamp(self, request: PostRequest, clamp: Clamp) -> PostRequest:
        """Lower ``max_tokens`` (and ``budget_tokens`` below it, or thinking off)."""
        out = clamp.max_output_tokens
        thinking = request.get("thinking")
        if not (isinstance(thinking, Mapping) and thinking.get("type") == "enabled"):
            return request.with_fields(max_tokens=out)
        asked = _int(thinking.get("budget_tokens")) or MIN_THINKING_TOKENS
        cap = asked if clamp.max_reasoning_tokens is None else clamp.max_reasoning_tokens
        before = _int(request.get("max_tokens")) or out
        share = asked * out // before if before > out else asked  # thinking keeps its share
        budget = min(cap, share, out - 1)
        if budget < MIN_THINKING_TOKENS:
            return request.with_fields(max_tokens=out, thinking={"type": "disabled"})
        return request.with_fields(max_tokens=out, thinking={**thinking, "budget_tokens": budget})

    def output_of(self, response: Any) -> Any:
        return [model_dump(block) for block in getattr(response, "content", None) or ()]


def _provider(client: Any) -> str:
    names = " ".join(cls.__name__ for cls in type(client).__mro__)
    if "Bedrock" in names or "AnthropicAWS" in names:
        return "aws.bedrock"
    if "Vertex" in names:
        return "gcp.vertex_ai"
    if "Foundry" in names:
        return "azure.ai.inference"
    return "anthropic"


def _server(client: Any) -> tuple[str | None, int | None]:
    try:
        url = client.base_url
        port = url.port or (443 if url.scheme == "https" else 80)
        return url.host or None, port
    except Exception:
        return None, None


def instrument(
    client: ClientT,
    *,
    price_book: PriceBook | None = None,
    retry: RetryPolicy | None = None,
    thinking: Thinking | None = None,
    provider_spans: bool = False,
) -> ClientT:
    """Instrument an ``anthropic.Anthropic`` / ``AsyncAnthropic`` client (or a Bedrock,
    Vertex or Foundry one) in place and return it (see :func:`tcc_plugin.instrument`).

    One provider call, one span with usage: the SDK's own OpenTelemetry span of each
    call is turned off for this client (its ``open_telemetry`` option, traces disabled;
    trace-context propagation is kept as configured), and ours records what it had
    beside (``anthropic.request.id`` and the organization and workspace ids, server
    address and port, ``error.type``). With ``provider_spans=True`` the SDK keeps its
    span, nested under ours, minus its ``gen_ai.usage.*`` attributes."""
    if not (callable(getattr(client, "post", None)) and hasattr(client, "messages")):
        raise TypeError(
            f"expected an anthropic.Anthropic or anthropic.AsyncAnthropic client, "
            f"got {type(client).__qualname__}"
        )
    config = Config(price_book=price_book, retry=retry, thinking=check_thinking(thinking))
    address, port = _server(client)
    adapter = MessagesAdapter(
        provider=_provider(client),
        server_address=address,
        server_port=port,
        classify=classify_error,
    )

    sdk_spans(client, keep=provider_spans)

    def again(copy: Any) -> Any:
        return instrument(
            copy,
            price_book=config.price_book,
            retry=config.retry,
            thinking=config.thinking,
            provider_spans=provider_spans,
        )

    result: ClientT = install(client, {MessagesAdapter.path: adapter}, config, again)
    return result


def uninstrument(client: ClientT) -> ClientT:
    """Undo :func:`instrument` on ``client``."""
    result: ClientT = uninstall(client)
    return result
