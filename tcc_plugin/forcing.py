"""Budget forcing: s1-style sequential scaling over any backend that continues a prompt.

The model thinks with the end-of-thinking delimiter as its stop. If it stops before
``min_thinking_tokens``, the delimiter is dropped, ``wait`` ("Wait") is appended and it
thinks on; when the thinking reaches ``max_thinking_tokens`` the delimiter is forced.
However thinking ended, the delimiter is followed by ``answer_prefix`` (e.g. "Final
Answer:") and the model answers: a run always ends with an answer phase
(Muennighoff et al., *s1: Simple test-time scaling*, 2025).

The backend is anything with ``complete(prompt, *, max_tokens, stop)`` returning
``(text, usage)`` or an object with ``text`` and ``usage`` (and ``finish_reason``), or an
OpenAI-compatible client (``openai.OpenAI(base_url=...)`` of vLLM or llama-server) whose
``completions.create`` continues the prompt. Every phase goes through the call
lifecycle, so each is a span (a child of the forcing run's span), budgeted, clamped,
priced and retried like any call: an instrumented client's own lifecycle, else one run
here (:class:`_PhaseAdapter`). A thinking phase's output counts as reasoning tokens.

The logic is written once, as a generator of phase requests (a plan);
:func:`budget_forcing` and :func:`abudget_forcing` drive it with
:func:`tcc_plugin.plans.drive` / :func:`~tcc_plugin.plans.adrive`.

Hosted reasoning APIs do not continue a raw prompt; there the same thinking budget maps
to the provider's own knob (see ``docs/budget-forcing.md``).
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol, runtime_checkable

from opentelemetry.trace import SpanKind

from tcc_plugin.adapter import (
    INSTRUMENTED_ATTRIBUTE,
    Adapter,
    AttributeValue,
    CallInfo,
    Clamp,
    ResponseInfo,
    StreamReader,
)
from tcc_plugin.budget import Budget, active_budgets
from tcc_plugin.drivers import arun, run
from tcc_plugin.plans import adrive, drive
from tcc_plugin.readers import StreamAccumulator, read_response
from tcc_plugin.telemetry import names, recorder
from tcc_plugin.usage import Usage

__all__ = [
    "ANSWER_TOKENS",
    "FORCED_END",
    "PHASE",
    "THINKING_TOKENS",
    "WAITS_APPENDED",
    "AsyncContinuer",
    "Continuation",
    "Continuer",
    "ForcingResult",
    "Phase",
    "PhaseRecord",
    "abudget_forcing",
    "budget_forcing",
    "current_phase",
]

_P = names.FORCING_PREFIX
THINKING_TOKENS: Final = _P + "thinking_tokens"
WAITS_APPENDED: Final = _P + "waits_appended"
FORCED_END: Final = _P + "forced_end"
ANSWER_TOKENS: Final = _P + "answer_tokens"
PHASES: Final = _P + "phases"
PHASE: Final = _P + "phase"
PHASE_INDEX: Final = _P + "phase.index"
MIN_THINKING: Final = _P + "min_thinking_tokens"
MAX_THINKING: Final = _P + "max_thinking_tokens"
CLAMPED_MAX_THINKING: Final = _P + "clamped.max_thinking_tokens"
END_REASON: Final = _P + "end_reason"
USAGE_INPUT: Final = _P + "usage.input_tokens"
USAGE_OUTPUT: Final = _P + "usage.output_tokens"
SPAN_NAME: Final = "budget_forcing"

PhaseKind = Literal["think", "answer"]


@dataclass(frozen=True, slots=True)
class Continuation:
    """What a backend returns for one continuation: the new text (stop string excluded),
    the call's usage, and why it stopped (``"stop"``: a stop string or end of
    sequence; ``"length"``: ``max_tokens`` reached; ``None``: unknown)."""

    text: str
    usage: Usage
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Phase:
    """One continuation the forcing asks for."""

    kind: PhaseKind
    index: int
    prompt: str
    max_tokens: int
    stop: tuple[str, ...]

    def attributes(self) -> dict[str, AttributeValue]:
        return {PHASE: self.kind, PHASE_INDEX: self.index}


@runtime_checkable
class Continuer(Protocol):
    """A backend that continues a raw prompt (sync)."""

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Any:
        """Continue ``prompt`` by at most ``max_tokens`` tokens, stopping at ``stop``."""
        ...


@runtime_checkable
class AsyncContinuer(Protocol):
    """A backend that continues a raw prompt (async)."""

    async def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Any:
        """Continue ``prompt`` by at most ``max_tokens`` tokens, stopping at ``stop``."""
        ...


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    """One phase as it ran: its kind, the prompt it continued, its exact usage
    (server-reported: input is the whole prompt re-sent, output what the model
    generated), its text and stop reason, and the ``max_tokens`` it was given."""

    kind: PhaseKind
    index: int
    prompt: str
    usage: Usage
    text: str
    finish_reason: str | None
    max_tokens: int


@dataclass(frozen=True, slots=True)
class ForcingResult:
    """The outcome of a forcing run.

    ``thinking`` is the thought as the model continued it (the appended ``wait``
    strings included); ``thinking_tokens`` the tokens the model generated while
    thinking (the sum of the think phases' output tokens, exact); ``answer`` the text
    after the delimiter (``answer_prefix`` not included); ``usage`` the sum over all
    phases; ``transcript`` the full final text (prompt, thought, delimiter, answer)."""

    answer: str
    thinking: str
    thinking_tokens: int
    answer_tokens: int
    waits_appended: int
    forced_end: bool
    end_reason: str
    phases: tuple[PhaseRecord, ...]
    usage: Usage
    transcript: str
    max_thinking_tokens: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The answer (so a result reads like a completion)."""
        return self.answer


@dataclass(frozen=True, slots=True)
class _Config:
    min_thinking_tokens: int
    max_thinking_tokens: int
    max_answer_tokens: int
    end_of_thinking: str
    wait: str
    max_waits: int
    answer_prefix: str
    answer_stop: tuple[str, ...]
    think_stop: tuple[str, ...]


def _room(budgets: Sequence[Budget], answer_tokens: int, input_tokens: int) -> int | None:
    """How many more thinking tokens the active budgets can pay for, keeping room for
    the answer (and, for a total-token cap, for re-sending the prompt of the next
    thinking phase and of the answer, about ``input_tokens`` each); ``None`` when no
    token limit binds."""
    room: int | None = None
    for b in budgets:
        left = b.remaining()
        for key, keep in (
            ("output_tokens", answer_tokens),
            ("total_tokens", answer_tokens + 2 * input_tokens),
            ("reasoning_tokens", 0),
        ):
            if key in left:
                value = int(left[key]) - keep
                room = value if room is None else min(room, value)
    return room


def _as_continuation(result: Any, max_tokens: int) -> Continuation:
    if isinstance(result, Continuation):
        return result
    if isinstance(result, tuple):
        text, usage = result[0], result[1]
        reason = result[2] if len(result) > 2 else None
    else:
        text, usage = result.text, result.usage
        reason = getattr(result, "finish_reason", None)
    if not isinstance(usage, Usage):
        raise TypeError(f"a forcing backend must report a tcc_plugin.Usage, got {usage!r}")
    if reason is None:  # a backend that does not say: infer it from the output count
        reason = "length" if usage.output >= max_tokens else "stop"
    return Continuation(str(text), usage, str(reason))


def _join(text: str, addition: str) -> str:
    if not addition or not text or text[-1].isspace() or addition[0].isspace():
        return text + addition
    return text + " " + addition


def _plan(
    prompt: str, config: _Config, budgets: Sequence[Budget], state: dict[str, Any]
) -> Generator[Phase, Continuation, ForcingResult]:
    """The forcing logic: yields each phase to run, receives its continuation."""
    phases: list[PhaseRecord] = []
    thinking = ""
    thinking_tokens = 0
    waits = 0
    forced = False
    end_reason = "delimiter"
    limit = config.max_thinking_tokens
    index = 0
    next_input = 0  # the next prompt's tokens, as far as the last phase tells
    while True:
        left = limit - thinking_tokens
        room = _room(budgets, config.max_answer_tokens, next_input)
        if room is not None and room < left:
            left = max(room, 0)
            limit = thinking_tokens + left
            state[CLAMPED_MAX_THINKING] = limit
        if left <= 0:
            forced, end_reason = True, "max_thinking_tokens"
            break
        phase = Phase(
            "think", index, prompt + thinking, left, (config.end_of_thinking, *config.think_stop)
        )
        got = yield phase
        index += 1
        record = PhaseRecord(
            "think", phase.index, phase.prompt, got.usage, got.text, got.finish_reason, left
        )
        phases.append(record)
        thinking += got.text
        thinking_tokens += got.usage.output
        next_input = got.usage.input + got.usage.output
        if got.finish_reason == "length":
            forced, end_reason = True, "max_thinking_tokens"
            break
        if (
            thinking_tokens < config.min_thinking_tokens
            and waits < config.max_waits
            and thinking_tokens < limit
        ):
            thinking = _join(thinking, config.wait)
            waits += 1
            continue
        if thinking_tokens >= config.min_thinking_tokens:
            end_reason = "delimiter"
        else:
            end_reason = "max_waits" if waits >= config.max_waits else "budget"
        break
    head = prompt + thinking
    if forced and head and not head[-1].isspace():
        head += "\n"
    head += config.end_of_thinking
    if config.answer_prefix:  # however thinking ended: else a model may end its turn at once
        head = _join(head + "\n", config.answer_prefix)
    answer_phase = Phase("answer", index, head, config.max_answer_tokens, config.answer_stop)
    got = yield answer_phase
    phases.append(
        PhaseRecord(
            "answer", index, head, got.usage, got.text, got.finish_reason, config.max_answer_tokens
        )
    )
    usage = sum((p.usage for p in phases), Usage())
    return ForcingResult(
        answer=got.text,
        thinking=thinking,
        thinking_tokens=thinking_tokens,
        answer_tokens=got.usage.output,
        waits_appended=waits,
        forced_end=forced,
        end_reason=end_reason,
        phases=tuple(phases),
        usage=usage,
        transcript=head + got.text,
        max_thinking_tokens=limit,
    )


def _accepts_phase_keywords(method: Any) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return "reasoning" in params and "attributes" in params


# -- the phase a backend call belongs to ---------------------------------------------------
_CURRENT_PHASE: contextvars.ContextVar[Phase | None] = contextvars.ContextVar(
    "tcc_plugin_forcing_phase", default=None
)


def current_phase() -> Phase | None:
    """The forcing phase whose backend call is running (``None`` outside forcing).

    An instrumented client's adapter reads it to count a thinking phase's output as
    reasoning tokens and to put the phase's ``tcc.forcing.*`` attributes on its span."""
    return _CURRENT_PHASE.get()


@contextmanager
def _in_phase(phase: Phase) -> Iterator[None]:
    token = _CURRENT_PHASE.set(phase)
    try:
        yield
    finally:
        _CURRENT_PHASE.reset(token)


# -- backends: how a phase is sent -----------------------------------------------------------


def _is_openai_shaped(backend: Any) -> bool:
    completions = getattr(backend, "completions", None)
    return callable(getattr(completions, "create", None)) and not callable(
        getattr(backend, "complete", None)
    )


def _as_thinking(continuation: Continuation, phase: Phase) -> Continuation:
    """A thinking phase's output is all reasoning, whatever the backend reported."""
    if phase.kind != "think" or continuation.usage.reasoning == continuation.usage.output:
        return continuation
    usage = replace(continuation.usage, reasoning=continuation.usage.output)
    return replace(continuation, usage=usage)


class _PhaseAdapter(Adapter["Phase", "Continuation"]):
    """Describes a phase to the lifecycle when the backend is not traced by itself (a
    ``complete()`` of the user's, or an uninstrumented OpenAI-shaped client): a text
    completion of at most ``max_tokens`` (all reasoning in a thinking phase), clamped
    by lowering ``max_tokens``, its usage what the backend reported."""

    def __init__(self, model: str | None) -> None:
        self.model = model

    def describe(self, phase: Phase) -> CallInfo:
        return CallInfo(
            model=self.model,
            operation="text_completion",
            max_output_tokens=phase.max_tokens,
            max_reasoning_tokens=phase.max_tokens if phase.kind == "think" else 0,
            input_estimate=lambda: len(phase.prompt.encode("utf-8", "surrogatepass")),
            attributes=phase.attributes(),
            input_messages=phase.prompt,
        )

    def clamp(self, phase: Phase, clamp: Clamp) -> Phase:
        return replace(phase, max_tokens=clamp.max_output_tokens)

    def read_response(self, response: Continuation) -> ResponseInfo:
        reasons = (response.finish_reason,) if response.finish_reason else ()
        return ResponseInfo(usage=response.usage, finish_reasons=reasons)

    def stream_reader(self, phase: Phase) -> StreamReader:
        return StreamAccumulator()  # pragma: no cover - phases are not streamed


class _Backend:
    """How the phases of one run reach ``backend``: its ``complete()`` (the user's, run
    through the lifecycle here), or ``completions.create`` of an OpenAI-shaped client
    (through the lifecycle of its instrumentation when instrumented, else here)."""

    def __init__(self, backend: Any, model: str | None, options: Mapping[str, Any] | None) -> None:
        self.options = dict(options or {})
        self.openai = _is_openai_shaped(backend)
        if self.openai and not model:
            raise ValueError("budget forcing over an OpenAI-compatible client needs model=...")
        if not self.openai and not callable(getattr(backend, "complete", None)):
            raise TypeError(
                "a forcing backend has a complete(prompt, *, max_tokens, stop) method or is "
                f"an OpenAI-compatible client; got {type(backend).__qualname__}"
            )
        self.model = model or _str(getattr(backend, "model", None))
        self.traced = self.openai and INSTRUMENTED_ATTRIBUTE in vars(backend)
        self.extended = not self.openai and _accepts_phase_keywords(backend.complete)
        self.method = backend.completions.create if self.openai else backend.complete
        self.adapter = _PhaseAdapter(self.model)

    def call(self, phase: Phase) -> Any:
        """Start the backend call of ``phase`` (a result, or an awaitable of one)."""
        kwargs: dict[str, Any] = dict(self.options)
        kwargs.update(max_tokens=phase.max_tokens, stop=list(phase.stop))
        if self.openai:
            return self.method(model=self.model, prompt=phase.prompt, **kwargs)
        if self.extended:
            kwargs["reasoning"] = phase.kind == "think"
            kwargs["attributes"] = phase.attributes()
        return self.method(phase.prompt, **kwargs)

    def read(self, raw: Any, phase: Phase) -> Continuation:
        if self.openai:
            raw = _openai_continuation(raw)
        return _as_thinking(_as_continuation(raw, phase.max_tokens), phase)

    def step(self) -> Callable[[Phase], Continuation]:
        """The sync step: one phase sent, its continuation returned."""

        def send(phase: Phase) -> Continuation:
            return self.read(self.call(phase), phase)

        def step(phase: Phase) -> Continuation:
            with _in_phase(phase):
                return send(phase) if self.traced else run(self.adapter, phase, send)

        return step

    def astep(self) -> Callable[[Phase], Awaitable[Continuation]]:
        """The async twin of :meth:`step`."""

        async def send(phase: Phase) -> Continuation:
            return self.read(await self.call(phase), phase)

        async def step(phase: Phase) -> Continuation:
            with _in_phase(phase):
                return await send(phase) if self.traced else await arun(self.adapter, phase, send)

        return step


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _openai_continuation(response: Any) -> Continuation:
    """The first choice of a legacy completion, and the response's usage."""
    choices = getattr(response, "choices", None) or ()
    first = choices[0] if choices else None
    info = read_response(response)
    return Continuation(
        str(getattr(first, "text", "") or ""),
        info.usage if info.usage is not None else Usage(),
        getattr(first, "finish_reason", None),
    )


def _config(
    min_thinking_tokens: int,
    max_thinking_tokens: int,
    max_answer_tokens: int,
    end_of_thinking: str,
    wait: str,
    max_waits: int | None,
    answer_prefix: str,
    answer_stop: Sequence[str] | str | None,
    think_stop: Sequence[str] | str | None,
) -> _Config:
    if min_thinking_tokens < 0 or max_thinking_tokens < 0:
        raise ValueError("thinking token bounds must be >= 0")
    if min_thinking_tokens > max_thinking_tokens:
        raise ValueError(
            f"min_thinking_tokens ({min_thinking_tokens}) exceeds max_thinking_tokens "
            f"({max_thinking_tokens})"
        )
    if max_answer_tokens < 1:
        raise ValueError("max_answer_tokens must be >= 1")
    if not end_of_thinking:
        raise ValueError("end_of_thinking must be a non-empty delimiter")

    def strings(value: Sequence[str] | str | None) -> tuple[str, ...]:
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)

    return _Config(
        min_thinking_tokens=min_thinking_tokens,
        max_thinking_tokens=max_thinking_tokens,
        max_answer_tokens=max_answer_tokens,
        end_of_thinking=end_of_thinking,
        wait=wait,
        max_waits=8 if max_waits is None else max_waits,
        answer_prefix=answer_prefix,
        answer_stop=strings(answer_stop),
        think_stop=strings(think_stop),
    )


class _Run:
    """The forcing run's span and bookkeeping, shared by the sync and async drivers."""

    def __init__(self, config: _Config, name: str) -> None:
        self.config = config
        self.state: dict[str, Any] = {}
        self.span = recorder.tracer().start_span(
            name,
            kind=SpanKind.INTERNAL,
            attributes={
                names.OPERATION_NAME: "budget_forcing",
                MIN_THINKING: config.min_thinking_tokens,
                MAX_THINKING: config.max_thinking_tokens,
            },
        )

    def activated(self) -> Any:
        return recorder.activated(self.span)

    def finish(self, result: ForcingResult | None, error: BaseException | None) -> None:
        try:
            attrs: dict[str, AttributeValue] = dict(self.state)
            if result is not None:
                attrs.update(
                    {
                        THINKING_TOKENS: result.thinking_tokens,
                        WAITS_APPENDED: result.waits_appended,
                        FORCED_END: result.forced_end,
                        ANSWER_TOKENS: result.answer_tokens,
                        PHASES: len(result.phases),
                        END_REASON: result.end_reason,
                        USAGE_INPUT: result.usage.input,
                        USAGE_OUTPUT: result.usage.output,
                    }
                )
        except Exception:  # telemetry never breaks the caller
            recorder.logger.warning("tcc_plugin: could not read a forcing result", exc_info=True)
            attrs = {}
        recorder.set_attributes(self.span, attrs)
        recorder.end_span(self.span, error)


def budget_forcing(
    backend: Continuer | Any,
    prompt: str,
    *,
    min_thinking_tokens: int = 0,
    max_thinking_tokens: int = 1024,
    max_answer_tokens: int = 256,
    end_of_thinking: str = "</think>",
    wait: str = "Wait",
    max_waits: int | None = None,
    answer_prefix: str = "Final Answer:",
    answer_stop: Sequence[str] | str | None = None,
    think_stop: Sequence[str] | str | None = None,
    options: Mapping[str, Any] | None = None,
    model: str | None = None,
    span_name: str = SPAN_NAME,
) -> ForcingResult:
    """Run s1 budget forcing of ``prompt`` (which should end where thinking starts,
    e.g. in ``<think>\\n``) on ``backend``.

    Thinking continues until the model emits ``end_of_thinking``; while it has thought
    fewer than ``min_thinking_tokens`` tokens (and fewer than ``max_waits`` waits were
    appended, default 8), the delimiter is replaced by ``wait`` and it goes on. At
    ``max_thinking_tokens`` (clamped to what the active budgets can still pay for,
    keeping ``max_answer_tokens`` for the answer) the delimiter is forced. However
    thinking ended, the delimiter is followed by ``answer_prefix`` and the model
    answers in at most ``max_answer_tokens`` tokens, stopping at ``answer_stop``
    (default: its end of sequence). ``think_stop`` adds stop strings to the thinking
    phases (e.g. the chat end-of-turn marker). ``options`` are more keyword arguments
    for every backend call (e.g. ``{"temperature": 0}``).

    ``backend`` is an object with ``complete(prompt, *, max_tokens, stop)``, or an
    OpenAI-compatible client (``openai.OpenAI(base_url=...)`` of vLLM or llama-server,
    best instrumented) whose ``completions.create`` is called with ``model``. Every
    phase goes through the call lifecycle: budgeted, clamped, priced and traced.
    """
    config = _config(
        min_thinking_tokens, max_thinking_tokens, max_answer_tokens, end_of_thinking,
        wait, max_waits, answer_prefix, answer_stop, think_stop,
    )  # fmt: skip
    sender = _Backend(backend, model, options)
    run = _Run(config, span_name)
    try:
        with run.activated():
            result = drive(_plan(prompt, config, active_budgets(), run.state), sender.step())
    except BaseException as exc:
        run.finish(None, exc)
        raise
    run.finish(result, None)
    return result


async def abudget_forcing(
    backend: AsyncContinuer | Any,
    prompt: str,
    *,
    min_thinking_tokens: int = 0,
    max_thinking_tokens: int = 1024,
    max_answer_tokens: int = 256,
    end_of_thinking: str = "</think>",
    wait: str = "Wait",
    max_waits: int | None = None,
    answer_prefix: str = "Final Answer:",
    answer_stop: Sequence[str] | str | None = None,
    think_stop: Sequence[str] | str | None = None,
    options: Mapping[str, Any] | None = None,
    model: str | None = None,
    span_name: str = SPAN_NAME,
) -> ForcingResult:
    """The async twin of :func:`budget_forcing` (``backend.complete`` is awaited, or the
    client is an ``openai.AsyncOpenAI``)."""
    config = _config(
        min_thinking_tokens, max_thinking_tokens, max_answer_tokens, end_of_thinking,
        wait, max_waits, answer_prefix, answer_stop, think_stop,
    )  # fmt: skip
    sender = _Backend(backend, model, options)
    run = _Run(config, span_name)
    try:
        with run.activated():
            plan = _plan(prompt, config, active_budgets(), run.state)
            result = await adrive(plan, sender.astep())
    except BaseException as exc:
        run.finish(None, exc)
        raise
    run.finish(result, None)
    return result
