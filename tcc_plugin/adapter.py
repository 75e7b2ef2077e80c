"""The small base class every integration's adapter derives from, and the types it speaks.

An adapter only translates: it describes a request (model, provider, output cap,
thinking budget), rewrites it when a budget clamps it, and reads usage out of a
response or a stream. Budgets, prices, spans, metrics and retries live in the core
lifecycle (:mod:`tcc_plugin.lifecycle`), never in an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from tcc_plugin.usage import BilledStep, Usage

__all__ = [
    "Adapter",
    "AttributeValue",
    "CallInfo",
    "Clamp",
    "ErrorInfo",
    "ResponseInfo",
    "StreamReader",
]

AttributeValue = str | bool | int | float | tuple[str, ...] | tuple[int, ...] | tuple[float, ...]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT", contravariant=True)


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a request asks for, as far as budgets and telemetry care.

    ``max_output_tokens`` is the per-choice output cap the request sets (its worst
    case); ``None`` when the request sets none and the model's maximum is unknown, in
    which case token and cost caps can only be checked after the call.
    ``max_output_assumed`` says that the request set no cap and ``max_output_tokens``
    is what the reservation assumes (the model's maximum, a declared default): spans
    then record it as ``tcc.request.assumed_max_tokens``, not as the request's
    ``gen_ai.request.max_tokens``.
    ``max_reasoning_tokens`` is the thinking budget when the request sets one (and an
    adapter can clamp it). ``input_tokens`` is an estimate of the input when known.
    ``input_estimate``, when given instead, computes that estimate on demand: only a
    call inside a budget needs it, so an unbudgeted call skips the work.
    ``choices`` is the number of completions asked for (OpenAI ``n``). ``clampable``
    is false when the adapter cannot lower the request's output cap, so budgets in
    ``clamp`` mode refuse it instead; ``min_output_tokens`` is the smallest cap the
    provider accepts (a clamp below it is a refusal).
    """

    model: str | None
    provider: str | None = None
    operation: str = "chat"
    max_output_tokens: int | None = None
    max_output_assumed: bool = False
    max_reasoning_tokens: int | None = None
    input_tokens: int | None = None
    choices: int = 1
    clampable: bool = True
    min_output_tokens: int = 1
    stream: bool = False
    server_address: str | None = None
    server_port: int | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    input_messages: Any = None
    input_estimate: Callable[[], int] | None = None


@dataclass(frozen=True, slots=True)
class Clamp:
    """New per-choice caps a budget in ``clamp`` mode imposes on a request."""

    max_output_tokens: int
    max_reasoning_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What a response says about the call: usage (``None`` when it carries none).

    ``unreported`` names the :class:`Usage` fields the response did not report (their
    0 in ``usage`` means "not reported", and no span attribute is written for them);
    ``estimated`` the fields that are estimates (``tcc.usage.estimated``).
    ``extra_steps`` are further billed steps of the call (priced apart, at their own
    model), ``server_tools`` the server-side tool requests billed per request
    (e.g. ``{"web_search_requests": 10}``)."""

    usage: Usage | None
    response_model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    output_messages: Any = None
    unreported: frozenset[str] = frozenset()
    estimated: frozenset[str] = frozenset()
    extra_steps: tuple[BilledStep, ...] = ()
    server_tools: Mapping[str, int] = field(default_factory=dict)


class StreamReader(Protocol):
    """Accumulates what a stream says, chunk by chunk."""

    def feed(self, chunk: Any) -> None:
        """Read one chunk (event) of the stream."""

    def result(self) -> ResponseInfo:
        """What the chunks read so far amount to."""


class Adapter(Generic[RequestT, ResponseT]):
    """Translate between one provider's request/response shapes and the core's types.

    Subclasses implement the four translation methods; the optional hooks below have
    no-op defaults, so the lifecycle calls them unconditionally."""

    def describe(self, request: RequestT) -> CallInfo:
        """Model, provider, operation, output cap and thinking budget of ``request``."""
        raise NotImplementedError

    def clamp(self, request: RequestT, clamp: Clamp) -> RequestT:
        """``request`` with its output cap (and thinking budget) lowered to ``clamp``."""
        raise NotImplementedError

    def read_response(self, response: ResponseT) -> ResponseInfo:
        """Usage and response metadata of a complete (non-stream) response."""
        raise NotImplementedError

    def stream_reader(self, request: RequestT) -> StreamReader:
        """A fresh reader for the chunks of a streamed response to ``request``."""
        raise NotImplementedError

    # -- optional hooks (no-op defaults) ---------------------------------------------------
    def output_messages(self, response: ResponseT) -> Any:
        """A response's output for opt-in content capture; called only when content is
        recorded and :meth:`read_response` left ``ResponseInfo.output_messages`` unset.
        ``None``: nothing to record."""
        return None

    def response_attributes(self, response: Any) -> Mapping[str, AttributeValue]:
        """What a provider's HTTP response (or error) says beside its body, for the
        call's span (the provider's request id, ...); read as soon as the call has it.
        Empty: nothing to add."""
        return {}

    def classify_error(self, error: BaseException) -> ErrorInfo | None:
        """How to treat ``error`` from the provider's SDK for retrying (``None``: not
        the SDK's; the core's generic classification then applies)."""
        return None

    def without_provider_retries(self, request: RequestT) -> RequestT:
        """``request`` made so that the provider SDK does not retry it itself (called
        while a :class:`tcc_plugin.RetryPolicy` applies)."""
        return request


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a provider error means for retrying.

    ``reason`` is one of ``"rate_limit"`` (429), ``"overloaded"`` (Anthropic 529),
    ``"server"`` (5xx), ``"conflict"`` (409), ``"request_timeout"`` (408), ``"timeout"``,
    ``"connection"``, ``"client"`` (other 4xx) or ``"malformed"`` (a response that could
    not be parsed). ``retry_after`` is the provider's ``retry-after-ms`` /
    ``Retry-After`` in seconds, when it sent one.
    """

    retryable: bool
    reason: str
    status: int | None = None
    retry_after: float | None = None


INSTRUMENTED_ATTRIBUTE = "_tcc_instrumentation"
"""Set on a client that ``tcc_plugin.instrument()`` instrumented: its calls go through
the lifecycle already (budget forcing, for one, then does not run them through it again)."""
