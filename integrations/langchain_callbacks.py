"""The LangChain callback handler: every chat model or LLM call through the core lifecycle.

:class:`TCCCallbackHandler` only translates. Its adapter (:class:`LangChainAdapter`)
describes what ``on_chat_model_start`` / ``on_llm_start`` report (the serialized model,
its invocation parameters, the LangSmith ``ls_*`` metadata and the messages) and reads
usage out of the ``LLMResult`` that ``on_llm_end`` reports; a
:class:`~tcc_plugin.lifecycle.Call` is begun at start and succeeded or failed at end or
error, keyed by the run id. Budgets, prices, spans and retry decisions stay in the core.

LangChain calls a sync handler in the caller's own context: in the thread that runs the
model (``batch`` workers are started by ``ContextThreadPoolExecutor``, which copies the
context) and, because the handler runs inline, in the asyncio task that awaits it. The
active budgets and the current OpenTelemetry span are therefore the caller's, and a
call's span nests under the caller's current span.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from tcc_plugin.adapter import Adapter, AttributeValue, CallInfo, Clamp, ResponseInfo, StreamReader
from tcc_plugin.budget import Budget, active_budgets
from tcc_plugin.errors import TCCError
from tcc_plugin.integrations._common import estimate_input_tokens
from tcc_plugin.integrations.server_dialect import DIALECT_ATTRIBUTE, known_dialect
from tcc_plugin.lifecycle import Call
from tcc_plugin.pricing import PriceBook
from tcc_plugin.readers import StreamAccumulator, read_response, usage_from_block
from tcc_plugin.retry import RetriesExhausted, RetryDecision, RetryPolicy, classify_error
from tcc_plugin.usage import Usage

__all__ = [
    "LangChainAdapter",
    "LangChainRequest",
    "TCCCallbackHandler",
    "ending_calls_on_error",
    "use_handler",
]

logger = logging.getLogger("tcc_plugin.integrations.langchain")

# ``ls_provider`` values LangChain partner packages report, as OpenTelemetry GenAI
# provider names; anything else passes through unchanged.
_PROVIDERS: Mapping[str, str] = {
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "google_genai": "gcp.gen_ai",
    "google_vertexai": "gcp.vertex_ai",
    "google_anthropic_vertex": "gcp.vertex_ai",
    "amazon_bedrock": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "bedrock_converse": "aws.bedrock",
    "mistralai": "mistral_ai",
    "xai": "x_ai",
    "ibm": "ibm.watsonx.ai",
}
# Invocation parameters that carry a per-choice output cap, in the order they are read.
_MAX_TOKENS_PARAMS = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
    "max_tokens_to_sample",
    "num_predict",
)
_BASE_URL_KWARGS = ("base_url", "openai_api_base", "anthropic_api_url", "azure_endpoint")
RUN_ID_ATTRIBUTE = "tcc.langchain.run_id"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


@dataclass(frozen=True, slots=True)
class LangChainRequest:
    """One model call as a callback sees it: the adapter's request type.

    ``operation`` is ``"chat"`` (a chat model) or ``"text_completion"`` (an LLM);
    ``messages`` the call's messages (chat) or its one prompt (LLM)."""

    operation: str
    serialized: Mapping[str, Any]
    messages: Sequence[Any]
    invocation_params: Mapping[str, Any]
    metadata: Mapping[str, Any]
    run_id: UUID
    name: str | None = None

    def fingerprint(self) -> tuple[Any, ...]:
        """What tells a retried call from another: model class, model, messages."""
        ident = self.serialized.get("id") if isinstance(self.serialized, Mapping) else None
        params = self.invocation_params
        model = params.get("model") or params.get("model_name")
        content = repr([_message_view(m) for m in self.messages])
        return (tuple(ident or ()), model, content)


def _message_view(message: Any) -> dict[str, Any]:
    if isinstance(message, str):
        return {"role": "user", "content": message}
    view = {
        "role": getattr(message, "type", "unknown"),
        "content": getattr(message, "content", message),
    }
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        view["tool_calls"] = tool_calls
    return view


class LangChainAdapter(Adapter["LangChainRequest", Any]):
    """Describes a LangChain model call and reads its ``LLMResult``.

    The output cap is the request's ``max_tokens``-like invocation parameter (else the
    ``ls_max_tokens`` metadata, else ``default_max_output_tokens``); the thinking budget
    is Anthropic's ``thinking.budget_tokens``; ``n`` is the number of choices; the input
    is bounded by the byte length of the messages and bound tools (a token is at least
    a byte; the call settles to the exact usage afterwards). A callback cannot rewrite
    the request LangChain is about to send, so calls are not ``clampable``: a budget in
    ``clamp`` mode refuses a call that does not fit."""

    def __init__(self, *, default_max_output_tokens: int | None = None) -> None:
        self.default_max_output_tokens = default_max_output_tokens

    def describe(self, request: LangChainRequest) -> CallInfo:
        params = request.invocation_params
        meta = request.metadata
        kwargs = (
            request.serialized.get("kwargs") if isinstance(request.serialized, Mapping) else None
        )
        kwargs = kwargs if isinstance(kwargs, Mapping) else {}
        model = (
            _str(meta.get("ls_model_name"))
            or _str(params.get("model"))
            or _str(params.get("model_name"))
            or _str(params.get("model_id"))
            or _str(kwargs.get("model"))
            or _str(kwargs.get("model_name"))
        )
        raw_provider = _str(meta.get("ls_provider"))
        provider = _PROVIDERS.get(raw_provider, raw_provider) if raw_provider else None
        max_out = next(
            (n for n in (_count(params.get(k)) for k in _MAX_TOKENS_PARAMS) if n is not None),
            None,
        )
        if max_out is None:
            max_out = _count(meta.get("ls_max_tokens"))
        assumed = max_out is None
        if max_out is None:
            max_out = self.default_max_output_tokens
        thinking = params.get("thinking")
        budget_tokens = (
            _count(thinking.get("budget_tokens")) if isinstance(thinking, Mapping) else None
        )
        choices = _count(params.get("n")) or 1
        address, port = _server(kwargs)
        attrs: dict[str, AttributeValue] = {RUN_ID_ATTRIBUTE: str(request.run_id)}
        dialect = _self_hosted(kwargs) if provider == "openai" else None
        if dialect is not None:  # a ChatOpenAI pointed at vLLM / llama-server
            provider = dialect
            attrs[DIALECT_ATTRIBUTE] = dialect
        views = [_message_view(m) for m in request.messages]
        return CallInfo(
            model=model,
            provider=provider,
            operation=request.operation,
            max_output_tokens=max_out,
            max_output_assumed=assumed,
            max_reasoning_tokens=budget_tokens,
            input_estimate=lambda: estimate_input_tokens(
                messages=views, schemas=params.get("tools")
            ),
            choices=choices,
            clampable=False,
            stream=bool(params.get("stream") or params.get("streaming")),
            server_address=address,
            server_port=port,
            attributes=attrs,
            input_messages=views,
        )

    def clamp(self, request: LangChainRequest, clamp: Clamp) -> LangChainRequest:
        # Never asked: describe() says the call is not clampable.
        return request

    def read_response(self, response: LLMResult) -> ResponseInfo:
        generations = response.generations[0] if response.generations else []
        usage: Usage | None = None
        model: str | None = None
        rid: str | None = None
        reasons: list[str] = []
        outputs: list[dict[str, Any]] = []
        for generation in generations:
            message = getattr(generation, "message", None)
            info = generation.generation_info or {}
            reason: Any = info.get("finish_reason") or info.get("stop_reason")
            if message is not None:
                read = read_response(message)
                # ChatOpenAI copies the response's usage onto each of its n choices.
                if usage is None:
                    usage = read.usage
                model = model or read.response_model
                # the message id is LangChain's run id; the provider's is in the metadata
                meta = getattr(message, "response_metadata", None) or {}
                rid = rid or _str(meta.get("id"))
                reason = read.finish_reasons[0] if read.finish_reasons else reason
                outputs.append({"role": "assistant", "content": message.content})
            else:
                outputs.append({"role": "assistant", "content": generation.text})
                model = model or _str(info.get("model_name")) or _str(info.get("model"))
            if isinstance(reason, str) and reason:
                reasons.append(reason)
        llm_output = response.llm_output or {}
        if usage is None:
            block = llm_output.get("token_usage", llm_output.get("usage"))
            if isinstance(block, Mapping):
                # LLMResult.flatten() empties the usage of every prompt but the first,
                # which carries the whole batch's: an empty block is zero, not unknown.
                usage = usage_from_block(block) if block else Usage()
        model = model or _str(llm_output.get("model_name")) or _str(llm_output.get("model"))
        rid = rid or _str(llm_output.get("id"))
        return ResponseInfo(
            usage=usage,
            response_model=model,
            response_id=rid,
            finish_reasons=tuple(reasons),
            output_messages=outputs or None,
        )

    def stream_reader(self, request: LangChainRequest) -> StreamReader:
        # Fed the message chunks: their usage_metadata are additive deltas.
        return StreamAccumulator()


def _self_hosted(kwargs: Mapping[str, Any]) -> str | None:
    """The dialect of the self-hosted server a model's base URL points at, when this
    process has detected it (an instrumented client's first call does)."""
    for key in _BASE_URL_KWARGS:
        url = kwargs.get(key)
        if isinstance(url, str) and url:
            return known_dialect(url)
    return None


def _server(kwargs: Mapping[str, Any]) -> tuple[str | None, int | None]:
    for key in _BASE_URL_KWARGS:
        url = kwargs.get(key)
        if isinstance(url, str) and url:
            try:
                parts = urlsplit(url)
                return parts.hostname, parts.port
            except ValueError:
                return None, None
    return None, None


# -- retry scopes (entered by RetryRunnable) ------------------------------------------------
@dataclass(slots=True)
class _Failure:
    call: Call[LangChainRequest]
    decision: RetryDecision
    key: tuple[Any, ...]


class RetryScope:
    """The retry state of one :class:`~tcc_plugin.integrations.langchain.RetryRunnable`
    invocation, shared with the handler through a context variable.

    A model call begun inside gets the scope's policy. When it fails, the handler asks
    the call (:meth:`Call.on_error`) what to do, and the call waits (its attempt
    settled, its span open). When that failure is what made the runnable fail and the
    decision is to retry, the same model call with the same messages, when the runnable
    runs again, becomes the call's next attempt (:meth:`Call.next_attempt`): one span,
    attempts as events, counted once against a ``calls`` cap. A failure that never
    reaches the runnable (a sampling group records a failed sample and carries on) is
    never resumed by another call; it ends when the scope closes."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = policy.clock()
        self.attempt = 1  # of the wrapped runnable, counted by the runnable
        self._lock = threading.Lock()
        self._pending: dict[tuple[Any, ...], tuple[Call[LangChainRequest], BaseException]] = {}
        self._failures: dict[int, tuple[BaseException, _Failure]] = {}

    # handler side
    def begin(
        self,
        adapter: LangChainAdapter,
        request: LangChainRequest,
        budgets: tuple[Budget, ...] | None,
        price_book: PriceBook | None,
    ) -> Call[LangChainRequest]:
        key = request.fingerprint()
        with self._lock:
            pending = self._pending.pop(key, None)
        if pending is None:
            return Call.begin(
                adapter, request, budgets=budgets, price_book=price_book, retry=self.policy
            )
        call = pending[0]
        call.next_attempt()  # re-reserves; a refusal ends the call and raises
        return call

    def failed(self, call: Call[LangChainRequest], error: BaseException) -> None:
        decision = call.on_error(error)  # ends the call unless it is to be retried
        with self._lock:
            self._failures[id(error)] = (
                error,
                _Failure(call, decision, call.request.fingerprint()),
            )

    # runnable side
    def decide(self, error: BaseException) -> tuple[RetryDecision, BaseException]:
        """What to do after the wrapped runnable raised ``error``: the decision, and
        the exception to raise when it is to stop."""
        with self._lock:
            found = self._failures.pop(id(error), None)
            if found is not None and found[0] is error and found[1].decision.retry:
                self._pending[found[1].key] = (found[1].call, error)
        if found is not None and found[0] is error:
            failure = found[1]
            return failure.decision, failure.call.final_error(error, failure.decision)
        # Not a model call's failure (a parser, a tool, ...): the policy decides alone.
        lefts = [t for t in (b.time_left() for b in active_budgets()) if t is not None]
        decision = self.policy.decide(
            self.attempt, self.started, error, classify_error(error), min(lefts, default=None)
        )
        final: BaseException = error
        if decision.exhausted:
            final = RetriesExhausted(self.attempt, error, decision.reason)
        return decision, final

    @contextmanager
    def active(self) -> Iterator[RetryScope]:
        """Make this the scope of the model calls begun in the block."""
        token = _RETRY_SCOPE.set(self)
        try:
            yield self
        finally:
            _RETRY_SCOPE.reset(token)

    def close(self) -> None:
        """End the calls left waiting for an attempt that never came."""
        with self._lock:
            waiting = [*self._pending.values(), *((f.call, e) for e, f in self._failures.values())]
            self._pending.clear()
            self._failures.clear()
        for call, error in waiting:
            call.fail(error)  # a no-op for a call already ended


_RETRY_SCOPE: contextvars.ContextVar[RetryScope | None] = contextvars.ContextVar(
    "tcc_plugin_langchain_retry_scope", default=None
)


@contextmanager
def retry_scope(policy: RetryPolicy) -> Iterator[RetryScope]:
    """A :class:`RetryScope` for one invocation, closed at the end of the block; model
    calls see it while it is :meth:`~RetryScope.active`."""
    scope = RetryScope(policy)
    try:
        yield scope
    finally:
        scope.close()


# -- the handler ---------------------------------------------------------------------------
@dataclass(slots=True)
class _Run:
    owner: int
    call: Call[LangChainRequest]
    scope: RetryScope | None
    group: list[UUID] | None = field(default=None)
    task: asyncio.Task[Any] | None = None
    watch: Any = None

    def unwatch(self) -> None:
        if self.task is not None:
            self.task.remove_done_callback(self.watch)
            self.task = None


class _Runs:
    """Calls in flight, keyed by LangChain run id, shared by every handler instance so
    that two handlers on the same run (config and model callbacks, say) never count it
    twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[UUID, _Run] = {}
        # Calls of one generate() with several message lists, while they start.
        self._groups: dict[int, list[UUID]] = {}

    def claimed(self, run_id: UUID) -> bool:
        with self._lock:
            return run_id in self._runs

    def add(self, run_id: UUID, run: _Run, group_key: int | None, size: int) -> None:
        with self._lock:
            self._runs[run_id] = run
            if group_key is not None:
                group = self._groups.setdefault(group_key, [])
                group.append(run_id)
                run.group = group
                if len(group) >= size:
                    del self._groups[group_key]

    def get(self, run_id: UUID, owner: int) -> _Run | None:
        with self._lock:
            run = self._runs.get(run_id)
        return run if run is not None and run.owner == owner else None

    def pop(self, run_id: UUID, owner: int | None = None) -> _Run | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or (owner is not None and run.owner != owner):
                return None
            del self._runs[run_id]
        run.unwatch()
        return run

    def end_open(self, run_ids: set[UUID], error: BaseException) -> None:
        """Fail the calls of ``run_ids`` that LangChain never ended."""
        for run_id in list(run_ids):
            run = self.pop(run_id)
            if run is not None:
                run.call.fail(error)

    def abort_group(self, group_key: int) -> list[_Run]:
        """The started calls of a group whose next member was refused."""
        with self._lock:
            ids = self._groups.pop(group_key, [])
            runs = [r for r in (self._runs.pop(i, None) for i in ids) if r is not None]
        for run in runs:
            run.unwatch()
        return runs

    def siblings(self, run: _Run, run_id: UUID) -> tuple[list[_Run], list[_Run]]:
        """The other calls of ``run``'s group still open: those before it, after it."""
        if run.group is None:
            return [], []
        with self._lock:
            ids = list(run.group)
            at = ids.index(run_id) if run_id in ids else len(ids)
            before = [r for r in (self._runs.pop(i, None) for i in ids[:at]) if r is not None]
            after = [r for r in (self._runs.pop(i, None) for i in ids[at + 1 :]) if r is not None]
        for sibling in (*before, *after):
            sibling.unwatch()
        return before, after


_RUNS = _Runs()


class TCCCallbackHandler(BaseCallbackHandler):
    """Budgets, prices and traces every LangChain chat model and LLM call it sees.

    Attach it like any callback (``config={"callbacks": [TCCCallbackHandler()]}``, or a
    model's ``callbacks=``), or for a whole block with :func:`use_handler`; the
    runnables of this integration attach it themselves. Each call charges the budgets
    active where it is made, plus ``budget`` when given, and is refused with
    :class:`~tcc_plugin.BudgetExceeded` *before* LangChain sends anything when they
    cannot pay its worst case (``raise_error`` is on so that LangChain aborts rather
    than logs). Budgets in ``clamp`` mode refuse too: a callback cannot shrink the
    request's ``max_tokens``.

    The worst case is the request's output cap (``max_tokens`` and the like; ChatAnthropic
    always sets one); a model without one is reserved ``default_max_output_tokens``, or,
    when that is ``None``, only its call counts and deadline are checked ahead and its
    tokens and cost after the call (they refuse the next one).
    """

    raise_error: bool = True
    run_inline: bool = True

    def __init__(
        self,
        *,
        budget: Budget | None = None,
        price_book: PriceBook | None = None,
        default_max_output_tokens: int | None = None,
    ) -> None:
        self.budget = budget
        self.price_book = price_book
        self.adapter = LangChainAdapter(default_max_output_tokens=default_max_output_tokens)

    def __repr__(self) -> str:
        return f"TCCCallbackHandler(budget={self.budget!r})"

    # Only model events matter.
    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    # -- start --------------------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start("chat", serialized, messages[0] if messages else [], run_id, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start("text_completion", serialized, prompts[:1], run_id, metadata, kwargs)

    def _start(
        self,
        operation: str,
        serialized: Mapping[str, Any] | None,
        messages: Sequence[Any],
        run_id: UUID,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        if _RUNS.claimed(run_id):
            return  # another TCCCallbackHandler already tracks this run
        params = kwargs.get("invocation_params")
        params = params if isinstance(params, Mapping) else {}
        size = kwargs.get("batch_size")
        size = size if isinstance(size, int) and size > 1 else 1
        group_key = id(params) if size > 1 else None
        request = LangChainRequest(
            operation=operation,
            serialized=serialized or {},
            messages=list(messages),
            invocation_params=params,
            metadata=metadata or {},
            run_id=run_id,
            name=_str(kwargs.get("name")),
        )
        chain = None if self.budget is None else (*active_budgets(), self.budget)
        scope = _RETRY_SCOPE.get()
        try:
            if scope is not None:
                call = scope.begin(self.adapter, request, chain, self.price_book)
            else:
                call = Call.begin(self.adapter, request, budgets=chain, price_book=self.price_book)
        except TCCError as exc:
            if group_key is not None:  # earlier calls of the same generate() never run
                for run in _RUNS.abort_group(group_key):
                    run.call.fail(exc)
            raise
        except Exception:
            logger.warning("tcc_plugin could not begin a LangChain call (ignored)", exc_info=True)
            return
        run = _Run(id(self), call, scope)
        _RUNS.add(run_id, run, group_key, size)
        # An instrumented client the model calls through takes this call's charge over
        # (one provider call, one charge, one span with usage); this one stays a parent.
        call.enclose()
        for begun in _BEGUN.get():
            begun.add(run_id)
        _watch_task(run, run_id)

    # -- stream -------------------------------------------------------------------------
    def on_llm_new_token(
        self,
        token: Any,
        *,
        chunk: Any = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        run = _RUNS.get(run_id, id(self))
        if run is None:
            return
        # Chunks flow: the model's provider call has begun (and taken the charge over if
        # it is instrumented); the caller's code between chunks must not take it.
        run.call.unenclose()
        if chunk is not None:
            run.call.chunk(getattr(chunk, "message", chunk))

    # -- end ----------------------------------------------------------------------------
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        run = _RUNS.pop(run_id, id(self))
        if run is None:
            return
        run.call.unenclose()
        try:
            call = run.call
            info = call.read_response(response)
            if info is None or info.usage is None:
                streamed = call.stream_result()
                if streamed is not None and streamed.usage is not None:
                    info = streamed
            call.succeed(info)
        except Exception:
            logger.warning("tcc_plugin could not end a LangChain call (ignored)", exc_info=True)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        run = _RUNS.pop(run_id, id(self))
        if run is None:
            return
        run.call.unenclose()
        try:
            if run.group is not None and not _in_task():
                # The sync generate() of several message lists stops at the first error
                # and reports nothing more (agenerate reports every call).
                before, after = _RUNS.siblings(run, run_id)
                for sibling in before:  # sent and answered, their results dropped
                    sibling.call.succeed(None)
                for sibling in after:  # never sent
                    sibling.call.fail(error)
            call = run.call
            if isinstance(error, GeneratorExit):
                # The consumer closed the stream: charge what was read, like the core's
                # observed streams do.
                call.succeed(self._partial(call, kwargs), **{"tcc.stream.abandoned": True})
            elif run.scope is not None:
                run.scope.failed(call, error)
            else:
                call.fail(error, self._partial(call, kwargs))
        except Exception:
            logger.warning("tcc_plugin could not end a LangChain call (ignored)", exc_info=True)

    def _partial(
        self, call: Call[LangChainRequest], kwargs: Mapping[str, Any]
    ) -> ResponseInfo | None:
        streamed = call.stream_result()
        if streamed is not None and streamed.usage is not None:
            return streamed
        response = kwargs.get("response")
        if isinstance(response, LLMResult) and response.generations:
            info = call.read_response(response)
            if info is not None and info.usage is not None:
                return info
        return streamed


# -- calls LangChain never ends -----------------------------------------------------------
def _in_task() -> bool:
    try:
        return asyncio.current_task() is not None
    except RuntimeError:  # no event loop in this thread
        return False


def _watch_task(run: _Run, run_id: UUID) -> None:
    """When the asyncio task a call began in is cancelled and the call is still open,
    fail it: ``BaseChatModel.agenerate`` reports no error for a cancelled call."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        return
    if task is None:
        return

    def ended(done: asyncio.Task[Any]) -> None:
        if done.cancelled():
            left = _RUNS.pop(run_id)
            if left is not None:
                left.call.fail(asyncio.CancelledError())

    run.task = task
    run.watch = ended
    task.add_done_callback(ended)


_BEGUN: contextvars.ContextVar[tuple[set[UUID], ...]] = contextvars.ContextVar(
    "tcc_plugin_langchain_begun", default=()
)


@contextmanager
def ending_calls_on_error() -> Iterator[None]:
    """End, with the error, the model calls begun in the block that are still open when
    it raises (a cancelled task, say), so that their reservations are released at once.
    The runnables of this integration run their work inside it."""
    begun: set[UUID] = set()
    token = _BEGUN.set((*_BEGUN.get(), begun))
    try:
        yield
    except BaseException as exc:
        _RUNS.end_open(begun, exc)
        raise
    finally:
        _BEGUN.reset(token)


# -- attaching the handler to every call of a block ----------------------------------------
_HANDLER: contextvars.ContextVar[TCCCallbackHandler | None] = contextvars.ContextVar(
    "tcc_plugin_langchain_handler", default=None
)
# LangChain adds the variable's handler to every callback manager it configures while the
# variable is set, unless a TCCCallbackHandler is attached already.
register_configure_hook(_HANDLER, True, TCCCallbackHandler)
_DEFAULT_HANDLER = TCCCallbackHandler()


@contextmanager
def use_handler(handler: TCCCallbackHandler | None = None) -> Iterator[TCCCallbackHandler]:
    """Send every LangChain model call made in the block (threads and tasks started in
    it included) through ``handler`` (a shared default one when ``None``), without
    passing ``callbacks=`` anywhere. A handler attached explicitly wins."""
    chosen = handler if handler is not None else (_HANDLER.get() or _DEFAULT_HANDLER)
    token = _HANDLER.set(chosen)
    try:
        yield chosen
    finally:
        _HANDLER.reset(token)
