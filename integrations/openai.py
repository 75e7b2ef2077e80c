"""OpenAI: budgets, prices and traces for ``openai.OpenAI`` / ``AsyncOpenAI`` clients.

``instrument(client)`` covers Chat Completions (``n > 1`` included), the Responses API
and legacy Completions, sync, async and streamed, and the SDK's helpers built on them
(``parse``, ``chat.completions.stream``, ``responses.stream``). Azure OpenAI clients
(subclasses) are covered alike.

A LangChain ``ChatOpenAI`` is instrumented through its SDK clients (``root_client``,
``root_async_client``), so a self-hosted server behind it (``server=`` / ``gpu_price=``,
see :mod:`.openai_server`) reports exact reasoning tokens to LangChain too.

Translation rules (the adapters below):

- worst case: the request's ``max_completion_tokens`` / ``max_tokens`` /
  ``max_output_tokens``, else the model's maximum output (:data:`MAX_OUTPUT_TOKENS`),
  times ``n`` (legacy completions: ``max(n, best_of)``, with the API's default
  ``max_tokens`` of 16). A budget in ``clamp`` mode rewrites the cap the request used,
  else ``max_completion_tokens`` / ``max_output_tokens`` / ``max_tokens``;
- usage: ``prompt_tokens`` / ``input_tokens`` count all input, ``cached_tokens`` a part;
  ``completion_tokens`` / ``output_tokens`` all output, ``reasoning_tokens`` a part;
- streams: chat and legacy completion streams are asked for
  ``stream_options.include_usage``; the extra usage-only chunk is hidden from callers
  who did not ask for it themselves;
- thinking: an effort level becomes ``reasoning_effort`` (chat) or ``reasoning.effort``
  (Responses) on reasoning models (o-series, gpt-5); a number of tokens becomes the
  largest of low/medium/high whose :data:`~tcc_plugin.instrument.EFFORT_TOKENS` it
  reaches. A knob the request sets itself is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final, TypeVar

try:
    import openai
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "tcc_plugin.integrations.openai needs the OpenAI SDK: pip install 'tcc-plugin[openai]'"
    ) from exc

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen_ai

from tcc_plugin.adapter import CallInfo, Clamp, ErrorInfo
from tcc_plugin.instrument import EFFORT_TOKENS, Effort, Thinking, check_thinking
from tcc_plugin.pricing import PriceBook
from tcc_plugin.readers import ChatStreamAccumulator, read_chat_response
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
from .openai_server import (
    GpuPrice,
    Server,
    is_hosted_openai,
    may_be_self_hosted,
    server_adapters,
    server_price_book,
)
from .server_dialect import check_dialect

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "ChatCompletionsAdapter",
    "CompletionsAdapter",
    "ResponsesAdapter",
    "classify_error",
    "instrument",
    "max_output_tokens",
    "uninstrument",
]

ClientT = TypeVar("ClientT")

MAX_OUTPUT_TOKENS: Final[tuple[tuple[str, int], ...]] = (
    ("gpt-5-chat", 16_384),
    ("gpt-5", 128_000),
    ("gpt-4.1", 32_768),
    ("gpt-4o", 16_384),
    ("chatgpt-4o", 16_384),
    ("gpt-4-turbo", 4_096),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo-instruct", 4_096),
    ("gpt-3.5-turbo", 4_096),
    ("o1-mini", 65_536),
    ("o1-preview", 32_768),
    ("o1", 100_000),
    ("o3", 100_000),
    ("o4", 100_000),
    ("codex-mini", 100_000),
)
"""The largest output of OpenAI models, by model-name prefix (first match wins): the
worst case reserved when a request sets no output cap. Unlisted models (deployments,
other servers) have no known maximum: token and cost caps are then checked after such a
call, unless a ``clamp`` budget gives it a cap."""

_REASONING_PREFIXES: Final = ("o1", "o3", "o4", "gpt-5", "codex")
_NOT_REASONING: Final = ("o1-mini", "o1-preview", "gpt-5-chat")
_RESPONSES_MIN_OUTPUT: Final = 16  # the Responses API rejects a smaller max_output_tokens
_LEGACY_DEFAULT_MAX_TOKENS: Final = 16  # the Completions API's default max_tokens
_TOKEN_EFFORTS: Final[tuple[Effort, ...]] = ("high", "medium", "low")

_REQUEST_ATTRIBUTES: Final = {
    "temperature": _gen_ai.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": _gen_ai.GEN_AI_REQUEST_TOP_P,
    "seed": _gen_ai.GEN_AI_REQUEST_SEED,
    "frequency_penalty": _gen_ai.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": _gen_ai.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "stop": _gen_ai.GEN_AI_REQUEST_STOP_SEQUENCES,
    "reasoning_effort": "tcc.request.reasoning.effort",
}


def _base_model(model: str) -> str:
    name = model.lower()
    if name.startswith("ft:"):
        name = name[3:]
    return name.rsplit("/", 1)[-1]  # "openai/gpt-5" (gateways) -> "gpt-5"


def max_output_tokens(model: str | None) -> int | None:
    """The largest output ``model`` can produce, if known (:data:`MAX_OUTPUT_TOKENS`)."""
    if not model:
        return None
    name = _base_model(model)
    for prefix, limit in MAX_OUTPUT_TOKENS:
        if name.startswith(prefix):
            return limit
    return None


def _reasons(model: str | None) -> bool:
    if not model:
        return False
    name = _base_model(model)
    return name.startswith(_REASONING_PREFIXES) and not name.startswith(_NOT_REASONING)


def _effort(thinking: Thinking) -> Effort:
    if isinstance(thinking, str):
        return thinking
    if thinking == 0:
        return "none"
    for level in _TOKEN_EFFORTS:
        if thinking >= EFFORT_TOKENS[level]:
            return level
    return "low"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _with_usage(request: PostRequest) -> PostRequest:
    """A streamed chat/legacy completion asks for the usage chunk if the caller did not."""
    if not request.stream or request.raw:  # a raw stream is handed over unread
        return request
    options = request.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        return request
    base = dict(options) if isinstance(options, Mapping) else {}
    changed = request.with_fields(stream_options={**base, "include_usage": True})
    return _hide(changed)


def _hide(request: PostRequest) -> PostRequest:
    return replace(request, hide_usage_chunk=True)


# -- errors --------------------------------------------------------------------------------
def classify_error(error: BaseException) -> ErrorInfo | None:
    """How the retry layer should treat an exception of the OpenAI SDK."""
    if isinstance(error, openai.APITimeoutError):
        return ErrorInfo(True, "timeout")
    if isinstance(error, openai.APIConnectionError):
        return ErrorInfo(True, "connection")
    if isinstance(error, openai.APIStatusError):
        info = classify_status(error.status_code, error.response.headers)
        if error.code == "insufficient_quota":  # a 429 that waiting does not fix
            return ErrorInfo(False, info.reason, info.status)
        return info
    if isinstance(error, openai.APIResponseValidationError):
        return ErrorInfo(False, "malformed", error.status_code)
    if isinstance(error, openai.APIError):  # an error event inside a stream
        kind = f"{error.type or ''} {error.code or ''}"
        if "rate_limit" in kind:
            return ErrorInfo(True, "rate_limit")
        if "server_error" in kind or "overloaded" in kind:
            return ErrorInfo(True, "server")
        return ErrorInfo(False, "client")
    return None


# -- adapters ------------------------------------------------------------------------------
class _OpenAIAdapter(PostAdapter):
    cap_keys: tuple[str, ...] = ()
    default_cap_key: str = ""
    min_output: int = 1

    def cap(self, request: PostRequest) -> int | None:
        caps = [c for c in (_int(request.get(k)) for k in self.cap_keys) if c is not None]
        return min(caps) if caps else None

    def clamp(self, request: PostRequest, clamp: Clamp) -> PostRequest:
        """Lower the request's output cap (the field it used, else the default one).
        The core never clamps below ``min_output`` (``CallInfo.min_output_tokens``)."""
        keys = [k for k in self.cap_keys if request.get(k) is not None] or [self.default_cap_key]
        return request.with_fields(**dict.fromkeys(keys, clamp.max_output_tokens))

    def info(
        self,
        request: PostRequest,
        *,
        max_output: int | None,
        input_estimate: Callable[[], int],
        choices: int = 1,
        input_messages: Any = None,
    ) -> CallInfo:
        model = request.get("model")
        return CallInfo(
            model=model if isinstance(model, str) else None,
            provider=self.provider,
            operation=self.operation,
            max_output_tokens=max_output,
            max_output_assumed=self.cap(request) is None,
            input_estimate=input_estimate,
            choices=choices,
            min_output_tokens=self.min_output,
            stream=request.stream,
            server_address=self.server_address,
            server_port=self.server_port,
            attributes=self.attributes(request, _REQUEST_ATTRIBUTES),
            input_messages=input_messages,
        )


class ChatCompletionsAdapter(_OpenAIAdapter):
    """``POST /chat/completions`` (``create``, ``parse``, ``stream``)."""

    path = "/chat/completions"
    reader = staticmethod(read_chat_response)
    stream_accumulator = ChatStreamAccumulator
    cap_keys = ("max_completion_tokens", "max_tokens")
    default_cap_key = "max_completion_tokens"

    def adjust(self, request: PostRequest, thinking: Thinking | None) -> PostRequest:
        if (
            thinking is not None
            and request.get("reasoning_effort") is None
            and _reasons(request.get("model"))
        ):
            request = request.with_fields(reasoning_effort=_effort(thinking))
        return _with_usage(request)

    def describe(self, request: PostRequest) -> CallInfo:
        cap = self.cap(request)
        messages = request.get("messages")
        return self.info(
            request,
            max_output=cap if cap is not None else max_output_tokens(request.get("model")),
            input_estimate=lambda: estimate_input_tokens(
                messages=messages,
                schemas=[
                    request.get("tools"),
                    request.get("functions"),
                    request.get("response_format"),
                ],
            ),
            choices=max(_int(request.get("n")) or 1, 1),
            input_messages=messages,
        )

    def output_of(self, response: Any) -> Any:
        return [model_dump(getattr(c, "message", None)) for c in getattr(response, "choices", ())]


class ResponsesAdapter(_OpenAIAdapter):
    """``POST /responses`` (``create``, ``parse``, ``stream``). Background responses
    carry no usage when created: they are charged their reservation."""

    path = "/responses"
    cap_keys = ("max_output_tokens",)
    default_cap_key = "max_output_tokens"
    min_output = _RESPONSES_MIN_OUTPUT

    def adjust(self, request: PostRequest, thinking: Thinking | None) -> PostRequest:
        if thinking is None or not _reasons(request.get("model")):
            return request
        reasoning = request.get("reasoning")
        base = dict(reasoning) if isinstance(reasoning, Mapping) else {}
        if base.get("effort") is not None:
            return request
        return request.with_fields(reasoning={**base, "effort": _effort(thinking)})

    def describe(self, request: PostRequest) -> CallInfo:
        cap = self.cap(request)
        info = self.info(
            request,
            max_output=cap if cap is not None else max_output_tokens(request.get("model")),
            input_estimate=lambda: estimate_input_tokens(
                request.get("instructions"),
                messages=request.get("input"),
                schemas=[request.get("tools"), request.get("text")],
            ),
            input_messages=request.get("input"),
        )
        reasoning = request.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
        if isinstance(effort, str):
            info = replace(
                info, attributes={**info.attributes, "tcc.request.reasoning.effort": effort}
            )
        return info

    def output_of(self, response: Any) -> Any:
        return [model_dump(item) for item in getattr(response, "output", None) or ()]


class CompletionsAdapter(_OpenAIAdapter):
    """``POST /completions`` (legacy completions)."""

    path = "/completions"
    operation = "text_completion"
    reader = staticmethod(read_chat_response)
    stream_accumulator = ChatStreamAccumulator
    cap_keys = ("max_tokens",)
    default_cap_key = "max_tokens"

    def adjust(self, request: PostRequest, thinking: Thinking | None) -> PostRequest:
        return _with_usage(request)

    def describe(self, request: PostRequest) -> CallInfo:
        cap = self.cap(request)
        n = max(_int(request.get("n")) or 1, 1)
        best_of = _int(request.get("best_of")) or 1
        return self.info(
            request,
            max_output=cap if cap is not None else _LEGACY_DEFAULT_MAX_TOKENS,
            input_estimate=lambda: estimate_input_tokens(
                request.get("prompt"), request.get("suffix")
            ),
            choices=max(n, best_of),  # best_of completions are generated (and billed)
            input_messages=request.get("prompt"),
        )

    def output_of(self, response: Any) -> Any:
        return [getattr(c, "text", None) for c in getattr(response, "choices", ())]


_ADAPTERS: Final = (ChatCompletionsAdapter, ResponsesAdapter, CompletionsAdapter)


def _provider(client: Any) -> str:
    return (
        "azure.ai.openai"
        if isinstance(client, (openai.AzureOpenAI, openai.AsyncAzureOpenAI))
        else "openai"
    )


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
    server: str | None = None,
    gpu_price: GpuPrice | None = None,
    provider_spans: bool = False,
) -> ClientT:
    """Instrument an ``openai.OpenAI`` / ``AsyncOpenAI`` client in place and return it
    (see :func:`tcc_plugin.instrument`).

    A client whose base URL is not OpenAI's may point at a self-hosted server: with
    ``server="vllm"`` / ``"llama.cpp"`` it is one (checked at the first call: a server
    that is not raises :class:`~tcc_plugin.integrations.server_dialect.DialectError`);
    without, the dialect is detected once per server at the first call (where the base
    URL looks self-hosted), and a server that is neither is treated as OpenAI's
    protocol. ``gpu_price`` (USD per hour, or a :class:`tcc_plugin.GpuHourPrice`)
    prices its calls by GPU time, shared among the calls in flight (see
    :mod:`.openai_server`). ``provider_spans`` has nothing to keep: the OpenAI SDK
    records no spans of its own."""
    if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        roots = _sdk_clients_of(client)
        if not roots:
            raise TypeError(
                "expected an openai.OpenAI or openai.AsyncOpenAI client (or a LangChain "
                f"ChatOpenAI), got {type(client).__qualname__}"
            )
        for root in roots:
            instrument(
                root,
                price_book=price_book,
                retry=retry,
                thinking=thinking,
                server=server,
                gpu_price=gpu_price,
            )
        return client
    declared = check_dialect(server)
    address, port = _server(client)
    kwargs: dict[str, Any] = {
        "provider": _provider(client),
        "server_address": address,
        "server_port": port,
        "classify": classify_error,
    }
    self_hosted: Server | None = None
    url = str(client.base_url)
    # gpu_price says the server is one's own even behind HTTPS on a public name.
    if (
        declared is not None
        or may_be_self_hosted(url)
        or (gpu_price is not None and not is_hosted_openai(url))
    ):
        self_hosted = Server(client, declared)
        adapters = server_adapters({cls.path: cls for cls in _ADAPTERS}, self_hosted, **kwargs)
    elif gpu_price is not None:
        raise ValueError("gpu_price prices a self-hosted server; this client calls OpenAI")
    else:
        adapters = {cls.path: cls(**kwargs) for cls in _ADAPTERS}
    book = server_price_book(gpu_price, price_book, self_hosted) if self_hosted else price_book
    config = Config(price_book=book, retry=retry, thinking=check_thinking(thinking))

    def again(copy: Any) -> Any:
        return instrument(
            copy,
            price_book=price_book,
            retry=config.retry,
            thinking=config.thinking,
            server=declared,
            gpu_price=gpu_price,
        )

    result: ClientT = install(client, adapters, config, again)
    return result


def _sdk_clients_of(model: Any) -> list[Any]:
    """The OpenAI SDK clients a LangChain ``ChatOpenAI`` (or ``OpenAI``) calls through
    (``root_client``, ``root_async_client``)."""
    roots = (getattr(model, "root_client", None), getattr(model, "root_async_client", None))
    return [c for c in roots if isinstance(c, (openai.OpenAI, openai.AsyncOpenAI))]


def uninstrument(client: ClientT) -> ClientT:
    """Undo :func:`instrument` on ``client`` (both SDK clients of a ``ChatOpenAI``)."""
    for root in _sdk_clients_of(client) or [client]:
        uninstall(root)
    return client
