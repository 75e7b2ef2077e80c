"""The one call lifecycle every integration goes through.

``describe -> reserve -> span -> call -> usage -> price -> settle -> span end + metrics``

:class:`Call` holds the logic as plain steps, each with an async twin where it reserves or
settles (a shared budget's store is then awaited, never blocking the event loop);
:func:`~tcc_plugin.drivers.run` and :func:`~tcc_plugin.drivers.arun` drive a
non-streamed call (sync and async), :class:`ObservedStream` and
:class:`AsyncObservedStream` (in :mod:`tcc_plugin.observed_stream`) a streamed one.
Integrations supply an :class:`~tcc_plugin.adapter.Adapter` and the function that sends
the request.
"""

from __future__ import annotations

import contextvars
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import replace
from decimal import Decimal
from typing import Any, Generic, TypeVar

from opentelemetry.trace import Span

from tcc_plugin.adapter import (
    Adapter,
    AttributeValue,
    CallInfo,
    ErrorInfo,
    ResponseInfo,
    StreamReader,
)
from tcc_plugin.budget import Budget, Charge, Demand, Reservation, active_budgets, reserve
from tcc_plugin.cancellation import cancelled_usage, is_cancellation
from tcc_plugin.errors import BudgetExceeded, PriceUnknown, UsageError
from tcc_plugin.observed_stream import AsyncObservedStream, ObservedStream
from tcc_plugin.pricing import (
    Bill,
    Price,
    PriceBook,
    bill,
    default_price_book,
    worst_case_usd,
)
from tcc_plugin.retry import (
    RetriesExhausted,
    RetryDecision,
    RetryEvent,
    RetryPolicy,
    active_retry_policy,
    classify_error,
)
from tcc_plugin.telemetry import names, recorder
from tcc_plugin.usage import Usage

__all__ = ["AsyncObservedStream", "Call", "ObservedStream"]

logger = logging.getLogger("tcc_plugin")

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


_NO_DEMAND = Demand(input_tokens=0)
_UNKNOWN = Decimal("NaN")  # not yet computed (a worst case is never NaN)

# The calls whose work is running here, innermost last: a call begun while one of them
# is open is a provider call made *for* it (an instrumented client inside an
# ``@llm_call`` function, a LangChain model call, ...). See ``Call.begin``.
_ENCLOSING: contextvars.ContextVar[tuple[Call[Any], ...]] = contextvars.ContextVar(
    "tcc_plugin_enclosing_calls", default=()
)


def _open_enclosing() -> tuple[Call[Any], ...]:
    return tuple(c for c in _ENCLOSING.get() if not c.done)


class _Enclosed:
    """The context of a call's own work: its span current, the call enclosing."""

    __slots__ = ("_call", "_span", "_token")

    def __init__(self, call: Call[Any]) -> None:
        self._call = call
        self._span = recorder.activated(call.span)
        self._token: contextvars.Token[tuple[Call[Any], ...]] | None = None

    def __enter__(self) -> None:
        self._span.__enter__()
        self._token = _ENCLOSING.set((*_ENCLOSING.get(), self._call))

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _ENCLOSING.reset(self._token)
        self._span.__exit__(None, None, None)  # the span records no error on the way out


class Call(Generic[RequestT]):
    """One LLM call on its way through the lifecycle.

    ``Call.begin`` describes the request, starts its span and reserves its worst case
    (raising :class:`BudgetExceeded` or :class:`PriceUnknown` when it cannot be paid);
    ``request`` is then the request to send, clamped if a budget shrank it. A failed
    attempt goes to :meth:`on_error`, which either ends the call or settles the attempt
    and says how long to wait before :meth:`next_attempt` re-reserves. Exactly one of
    :meth:`succeed` and :meth:`fail` ends the call; both are idempotent.
    """

    __slots__ = (
        "_by_callback",
        "_counts_call",
        "_invalid_usage",
        "_original",
        "_policy",
        "_policy_start",
        "_price",
        "_price_book",
        "_reader",
        "_started",
        "_ttfc",
        "adapter",
        "attempt",
        "budgets",
        "capture",
        "delegated",
        "done",
        "extra_budgets",
        "info",
        "nested_calls",
        "request",
        "reservation",
        "span",
    )

    def __init__(
        self,
        adapter: Adapter[RequestT, Any],
        request: RequestT,
        info: CallInfo,
        span: Span | None,
        budgets: tuple[Budget, ...],
        price: Price | None,
        price_book: PriceBook,
        policy: RetryPolicy | None = None,
        capture: bool = False,
    ) -> None:
        self.adapter = adapter
        self.request = request
        self._original = request
        self._policy = policy
        self._policy_start = policy.clock() if policy is not None else 0.0
        self.attempt = 1
        self.info = info
        self.span = span
        self.budgets = budgets
        self.reservation: Reservation | None = None
        self.done = False
        self._price = price
        self._price_book = price_book
        self._started = time.perf_counter()
        self._ttfc: float | None = None
        self._reader: StreamReader | None = None
        self.capture = capture  # whether content may be recorded: decided once per call
        self.delegated = False  # a provider call made for this one charges and records usage
        self.nested_calls = 0
        self.extra_budgets: tuple[Budget, ...] = ()  # beyond the active chain (passed in)
        self._counts_call = True
        self._by_callback = False
        self._invalid_usage: str | None = None  # why the response's usage was rejected

    @classmethod
    def begin(
        cls,
        adapter: Adapter[RequestT, Any],
        request: RequestT,
        *,
        budgets: tuple[Budget, ...] | None = None,
        price_book: PriceBook | None = None,
        span_name: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Call[RequestT]:
        """Describe, open the span and reserve; the returned call is ready to send.

        ``retry`` (else the policy entered around the caller, if any) governs
        :meth:`on_error`; while one applies, the provider SDK's own retries are turned
        off through the adapter, so retry layers never multiply."""
        call, handed = cls._open(adapter, request, budgets, price_book, span_name, retry)
        try:
            call._reserve(handed)
        except BaseException as exc:
            call._refused(exc)
            raise
        return call

    @classmethod
    def _open(
        cls,
        adapter: Adapter[RequestT, Any],
        request: RequestT,
        budgets: tuple[Budget, ...] | None,
        price_book: PriceBook | None,
        span_name: str | None,
        retry: RetryPolicy | None,
    ) -> tuple[Call[RequestT], Reservation | None]:
        """Describe and open the span: the call, and the reservation it takes over."""
        info = adapter.describe(request)
        book = price_book or default_price_book()
        active = active_budgets()
        chain = active if budgets is None else budgets
        enclosing = _open_enclosing()
        outer = next((c for c in enclosing if c._claimable_by(adapter)), None)
        if enclosing:
            # Budgets an enclosing call was given beyond the active chain (a handler's
            # or a generator's ``budget=``) are charged by the provider call it makes.
            extra = tuple(b for c in enclosing for b in c.extra_budgets)
            chain = tuple(dict.fromkeys((*chain, *extra)))
        policy = retry if retry is not None else active_retry_policy()
        if policy is not None:
            request = adapter.without_provider_retries(request)
        price = book.lookup(info.model, info.provider)
        capture = recorder.capture_content()
        parent = outer if outer is not None else (enclosing[-1] if enclosing else None)
        if parent is not None and parent._by_callback:
            # A callback's call is not the current span: nest under it explicitly.
            with recorder.activated(parent.span):
                span = recorder.start_call_span(info, span_name, capture=capture)
        else:
            span = recorder.start_call_span(info, span_name, capture=capture)
        call = cls(adapter, request, info, span, chain, price, book, policy, capture)
        if budgets is not None:
            call.extra_budgets = tuple(b for b in chain if b not in active)
        handed: Reservation | None = None
        if outer is not None:
            # One provider call, one charge: the enclosing call hands its reservation
            # (and its call count) over, and stays a parent span without usage.
            outer.delegated = True
            outer.nested_calls += 1
            call._counts_call = outer.attempt == 1 and outer._counts_call
            handed = outer.reservation
        elif enclosing:
            enclosing[-1].nested_calls += 1
        return call, handed

    def _claimable_by(self, adapter: Adapter[Any, Any]) -> bool:
        """Whether a call of ``adapter`` begun now is a provider call made for this one
        and takes its reservation over: the first made in each attempt does (later
        ones reserve for themselves). A callback's calls of one kind are siblings (one
        ``generate()`` of several message lists), never made for each other."""
        reservation = self.reservation
        if self.done or reservation is None or reservation.settled:
            return False
        return not (self._by_callback and type(self.adapter) is type(adapter))

    # -- reservation ------------------------------------------------------------------
    def _demand(self) -> Demand:
        info = self.info
        price = self._price
        input_tokens = info.input_tokens
        if input_tokens is None:
            input_tokens = info.input_estimate() if info.input_estimate is not None else 0
        choices = info.choices if info.choices > 1 else 1

        known: dict[tuple[int | None, int | None], Decimal | None] = {}

        def worst_usd(output: int | None, reasoning: int | None) -> Decimal | None:
            # A reservation asks for the same caps more than once (charge, then bounded).
            found = known.get((output, reasoning), _UNKNOWN)
            if found is not _UNKNOWN:
                return found
            if price is None:
                return None
            out = (output or 0) * choices
            thinking = min(reasoning if reasoning is not None else out, out)
            usd = worst_case_usd(price, input_tokens, out, thinking)
            known[output, reasoning] = usd
            return usd

        return Demand(
            input_tokens=input_tokens,
            max_output_tokens=info.max_output_tokens,
            max_reasoning_tokens=info.max_reasoning_tokens,
            choices=choices,
            clampable=info.clampable,
            min_output_tokens=info.min_output_tokens,
            # a retry is the same call, and so is a provider call made for a retried one
            calls=1 if self.attempt == 1 and self._counts_call else 0,
            worst_usd=worst_usd if price is not None else None,
        )

    def _reserve(self, replacing: Reservation | None = None) -> None:
        self.reservation = reserve(self._reserving(), self.budgets, replacing=replacing)
        self._clamp()

    def _reserving(self) -> Demand:
        """What to reserve (raises :class:`PriceUnknown` for a USD cap it cannot price)."""
        if not self.budgets:  # nothing to reserve in: skip building the demand
            return _NO_DEMAND
        if self._price is None and any("usd" in b.limits for b in self.budgets):
            raise PriceUnknown(self.info.model or "<unnamed>", self.info.provider)
        return self._demand()

    def _clamp(self) -> None:
        assert self.reservation is not None
        clamp = self.reservation.clamp
        if clamp is not None:
            try:
                self.request = self.adapter.clamp(self.request, clamp)
            except BaseException:
                self.reservation.release()
                raise
            extra: dict[str, AttributeValue] = {
                names.BUDGET_CLAMPED_MAX_TOKENS: clamp.max_output_tokens
            }
            if clamp.max_reasoning_tokens is not None:
                extra[names.BUDGET_CLAMPED_REASONING_TOKENS] = clamp.max_reasoning_tokens
            recorder.set_attributes(self.span, extra)

    def _refused(self, exc: BaseException) -> None:
        self.done = True
        attrs: dict[str, AttributeValue] = {names.BUDGET_OUTCOME: names.OUTCOME_REFUSED}
        if isinstance(exc, BudgetExceeded):
            attrs[names.BUDGET_LIMIT_HIT] = exc.limit
        if self.attempt > 1:
            attrs[names.RETRY_ATTEMPTS] = self.attempt
        recorder.set_attributes(self.span, attrs)
        recorder.end_span(self.span, exc)
        recorder.record_call_metrics(self.info, None, None, None, 0.0, refused=True)

    # -- retries ----------------------------------------------------------------------
    def on_error(self, error: BaseException) -> RetryDecision:
        """Decide what the failed current attempt leads to.

        When the decision is to stop, the call is ended (failed) and the caller raises
        :meth:`final_error`; otherwise the attempt is settled (usage it really consumed
        is charged, nothing else) and the caller waits ``decision.wait`` seconds, then
        calls :meth:`next_attempt`."""
        decision, partial = self._decide(error)
        if not decision.retry:
            self._finish(partial, error, {})
            return decision
        charge = self._attempt_charge(partial)
        if charge is not None and self.reservation is not None:
            self.reservation.settle(charge)
        self._before_sleep(error, decision)
        return decision

    def _decide(self, error: BaseException) -> tuple[RetryDecision, ResponseInfo | None]:
        self.note_response(error)  # a provider error carries the HTTP response (request id)
        partial = self.stream_result()
        policy = self._policy
        if policy is None:
            decision = RetryDecision(False, 0.0, "no retry policy", None)
        else:
            info = self._classify(error)
            decision = policy.decide(
                self.attempt, self._policy_start, error, info, self._time_left()
            )
        self._attempt_event(error, decision)
        return decision, partial

    def _before_sleep(self, error: BaseException, decision: RetryDecision) -> None:
        policy = self._policy
        if policy is not None and policy.before_sleep is not None:
            try:
                policy.before_sleep(RetryEvent(self.attempt, error, decision.info, decision.wait))
            except Exception:
                logger.warning("tcc_plugin: a before_sleep hook raised (ignored)", exc_info=True)

    def final_error(self, error: BaseException, decision: RetryDecision) -> BaseException:
        """The exception to raise when ``decision`` stopped retrying ``error``."""
        if decision.exhausted:
            return RetriesExhausted(self.attempt, error, decision.reason)
        return error

    def next_attempt(self) -> None:
        """Start the next attempt: a fresh reservation (and clamp) for the request."""
        self._restart()
        try:
            self._reserve()
        except BaseException as exc:
            self._refused(exc)
            raise

    def _restart(self) -> None:
        self.attempt += 1
        self.request = self._original
        self._reader = None

    def _classify(self, error: BaseException) -> ErrorInfo | None:
        info: ErrorInfo | None = None
        try:
            info = self.adapter.classify_error(error)
        except Exception:
            logger.warning("tcc_plugin: classify_error raised (ignored)", exc_info=True)
        return info if info is not None else classify_error(error)

    def _time_left(self) -> float | None:
        lefts = [t for t in (b.time_left() for b in self.budgets) if t is not None]
        return min(lefts) if lefts else None

    def _attempt_event(self, error: BaseException, decision: RetryDecision) -> None:
        if self._policy is None:
            return
        attrs: dict[str, AttributeValue] = {
            names.RETRY_ATTEMPT: self.attempt,
            names.ERROR_TYPE: type(error).__qualname__,
            names.RETRY_DECISION: "retry" if decision.retry else "give_up",
            names.RETRY_REASON: decision.reason,
        }
        if decision.info is not None:
            attrs[names.RETRY_ERROR_KIND] = decision.info.reason
            if decision.info.status is not None:
                attrs[names.HTTP_STATUS_CODE] = decision.info.status
        if decision.retry:
            attrs[names.RETRY_WAIT] = decision.wait
        recorder.add_event(self.span, names.RETRY_EVENT, attrs)

    def _attempt_charge(self, partial: ResponseInfo | None) -> Charge | None:
        """What a failed attempt that will be retried settles to (``None``: nothing held)."""
        reservation = self.reservation
        if reservation is None:
            return None
        calls = reservation.charge.calls  # the call is counted once, on its first attempt
        usage = partial.usage if partial is not None else None
        if usage is None:
            return Charge(calls=calls)
        elapsed = time.perf_counter() - self._started
        cost = self._bill(usage, elapsed, partial).usd
        return Charge.of(usage, cost, calls=calls)

    # -- span context -----------------------------------------------------------------
    def activated(self) -> AbstractContextManager[Any]:
        """A context in which the call's span is the current span and the call encloses
        what begins there: a provider call made in it takes the call's charge over."""
        return _Enclosed(self)

    def enclose(self) -> None:
        """Make this call enclose what begins in the current context from now on, until
        :meth:`unenclose` (for callbacks, which have no block to run in: a LangChain
        model call). Calls enclosed together are taken over first begun, first taken."""
        self._by_callback = True
        _ENCLOSING.set((*(c for c in _open_enclosing() if c is not self), self))

    def unenclose(self) -> None:
        """Undo :meth:`enclose` (a no-op where it was not done)."""
        current = _ENCLOSING.get()
        if self in current:
            _ENCLOSING.set(tuple(c for c in current if c is not self and not c.done))

    def note_response(self, response: Any) -> None:
        """Record what the provider's HTTP response says beside its body (the request
        id, ...), through the adapter's ``response_attributes(response)``, as soon as
        the call has it: a stream has its headers long before its usage."""
        if self.delegated:
            return
        try:
            attributes = self.adapter.response_attributes(response)
        except Exception:
            logger.warning("tcc_plugin could not read a response's headers", exc_info=True)
            return
        if attributes:
            recorder.set_attributes(self.span, attributes)

    # -- streams ----------------------------------------------------------------------
    def stream_reader(self) -> StreamReader:
        """The reader that accumulates this call's streamed response."""
        if self._reader is None:
            self._reader = self.adapter.stream_reader(self.request)
        return self._reader

    def chunk(self, chunk: Any) -> None:
        """Note one streamed chunk (never raises: a chunk we cannot read is skipped)."""
        if self.delegated:
            return  # the provider call made for this one reads its usage
        if self._ttfc is None:
            self._ttfc = time.perf_counter() - self._started
            if not self.info.stream:  # e.g. LangChain says only now that it streams
                recorder.set_attributes(self.span, {names.REQUEST_STREAM: True})
        try:
            self.stream_reader().feed(chunk)
        except Exception:
            logger.warning("tcc_plugin could not read a stream chunk (ignored)", exc_info=True)

    def stream_result(self) -> ResponseInfo | None:
        """What the stream said so far (``None`` if it cannot be read)."""
        if self._reader is None:
            return None
        try:
            return self._reader.result()
        except UsageError as exc:
            self._invalid_usage = str(exc)
            return None
        except Exception:
            logger.warning("tcc_plugin could not read a stream's usage", exc_info=True)
            return None

    # -- ending -----------------------------------------------------------------------
    def read_response(self, response: Any) -> ResponseInfo | None:
        """The adapter's reading of ``response``; ``None`` when it cannot be read."""
        if self.delegated:
            return None  # the provider call made for this one read it
        try:
            info = self.adapter.read_response(response)
        except UsageError as exc:
            self._invalid_usage = str(exc)
            return None
        except Exception:
            logger.warning("tcc_plugin could not read a response's usage", exc_info=True)
            return None
        if self.capture and info.output_messages is None:
            try:
                info = replace(info, output_messages=self.adapter.output_messages(response))
            except Exception:
                logger.warning("tcc_plugin could not read a response's output", exc_info=True)
        return info

    def succeed(self, response: ResponseInfo | None, **extra: AttributeValue) -> None:
        """Settle, price and record a call that returned ``response``."""
        self._finish(response, None, dict(extra))

    async def asucceed(self, response: ResponseInfo | None, **extra: AttributeValue) -> None:
        """The async twin of :meth:`succeed` (a shared store's settlement is awaited)."""
        await self._afinish(response, None, dict(extra))

    def fail(
        self,
        error: BaseException,
        partial: ResponseInfo | None = None,
        **extra: AttributeValue,
    ) -> None:
        """Settle and record a call that raised ``error`` (after ``partial``, if any)."""
        self._finish(partial, error, dict(extra))

    async def afail(
        self,
        error: BaseException,
        partial: ResponseInfo | None = None,
        **extra: AttributeValue,
    ) -> None:
        """The async twin of :meth:`fail`."""
        await self._afinish(partial, error, dict(extra))

    def _finish(
        self,
        response: ResponseInfo | None,
        error: BaseException | None,
        extra: dict[str, AttributeValue],
    ) -> None:
        if not self._ending(error, extra):
            return
        duration, usage, cost, charged = self._measure(response, error, extra)
        actual = self._actual(usage, charged, error)
        if actual is not None and self.reservation is not None:
            self.reservation.settle(actual)
        self._record(response, error, duration, usage, cost, extra)

    async def _afinish(
        self,
        response: ResponseInfo | None,
        error: BaseException | None,
        extra: dict[str, AttributeValue],
    ) -> None:
        """The async twin of :meth:`_finish`: the settlement is awaited when it goes to
        a shared store (in-memory budgets settle in the same one local step)."""
        reservation = self.reservation
        if self.delegated and not self.done and reservation is not None and reservation.in_store:
            await reservation.arelease()  # then _ending's release is a no-op
        if not self._ending(error, extra):
            return
        duration, usage, cost, charged = self._measure(response, error, extra)
        actual = self._actual(usage, charged, error)
        if actual is not None:
            assert reservation is not None
            if reservation.in_store:
                await reservation.asettle(actual)
            else:  # in-memory: the one local step, nothing to await
                reservation.settle(actual)
        self._record(response, error, duration, usage, cost, extra)

    def _ending(self, error: BaseException | None, extra: dict[str, AttributeValue]) -> bool:
        """Mark the call done; ``False`` when there is nothing more to settle or record
        (already ended, or delegated: ended here as a parent span)."""
        if self.done:
            return False
        self.done = True
        if self._policy is not None:
            extra[names.RETRY_ATTEMPTS] = self.attempt
        if self.delegated:
            self._finish_delegated(error, extra)
            return False
        return True

    def _measure(
        self,
        response: ResponseInfo | None,
        error: BaseException | None,
        extra: dict[str, AttributeValue],
    ) -> tuple[float, Usage | None, Decimal | None, Decimal | None]:
        """The call's duration, usage, cost and what its budgets are charged in USD."""
        duration = time.perf_counter() - self._started
        usage = response.usage if response is not None else None
        cost: Decimal | None = None
        charged: Decimal | None = None
        if usage is None and is_cancellation(error):
            # never free: see tcc_plugin.cancellation
            usage, cost = self._cancelled_usage(duration)
            charged = cost
            extra[names.USAGE_ESTIMATED] = True
        elif usage is not None:
            billed = self._bill(usage, duration, response)
            charged = billed.usd  # a budget is charged what could be priced
            cost = billed.usd if billed.complete else None
            extra.update(billed.attributes)
        elif error is None or self._ttfc is not None:
            extra[names.USAGE_MISSING] = True
            extra[names.COST_UNKNOWN] = True
            extra[names.USAGE_ESTIMATED] = True  # charged its reservation, not a count
            invalid = self._invalid_usage
            if invalid is None and response is not None:
                # the reader rejected it (wrong types, negative counts): say so once
                found = response.attributes.get(names.USAGE_ERROR)
                invalid = str(found) if found is not None else None
            if invalid is not None:
                extra[names.USAGE_ERROR] = invalid
                logger.warning(
                    "tcc_plugin: a response of %s model %r has invalid usage (%s); "
                    "charging the call's reservation (its worst case) instead",
                    self.info.provider or "provider",
                    self.info.model,
                    invalid,
                )
            else:
                logger.warning(
                    "tcc_plugin: a %s response of model %r carried no usage; charging "
                    "the call's reservation (its worst case)",
                    self.info.provider or "provider",
                    self.info.model,
                )
        return duration, usage, cost, charged

    def _record(
        self,
        response: ResponseInfo | None,
        error: BaseException | None,
        duration: float,
        usage: Usage | None,
        cost: Decimal | None,
        extra: dict[str, AttributeValue],
    ) -> None:
        """End the span (with the budgets' account after settlement) and the metrics."""
        reservation = self.reservation
        if reservation is None or not reservation.budgets:
            budget: dict[str, AttributeValue] = {names.BUDGET_OUTCOME: names.OUTCOME_NONE}
        else:
            budget = _budget_attributes(reservation)
            if names.BUDGET_NAME in budget:  # text (the rest are numbers): cleaned as extra
                extra[names.BUDGET_NAME] = budget.pop(names.BUDGET_NAME)
        recorder.record_response(
            self.span,
            response,
            usage,
            cost,
            time_to_first_chunk=self._ttfc,
            extra=extra,
            checked=budget,
            capture=self.capture,
        )
        recorder.end_span(self.span, error)
        estimated = names.USAGE_ESTIMATED in extra  # token metrics count reported usage only
        recorder.record_call_metrics(
            self.info,
            response,
            None if estimated else usage,
            None if estimated else cost,
            duration,
            error=error,
            time_to_first_chunk=self._ttfc,
        )

    def _finish_delegated(
        self, error: BaseException | None, extra: dict[str, AttributeValue]
    ) -> None:
        """End a call whose provider calls were made (and charged, and recorded with
        usage) by calls begun for it: a parent span, with no usage, cost or metrics."""
        if self.reservation is not None:
            self.reservation.release()  # a retry's reservation no provider call took over
        extra[names.BUDGET_OUTCOME] = names.OUTCOME_DELEGATED
        extra[names.NESTED_CALLS] = self.nested_calls
        recorder.set_attributes(self.span, extra)
        recorder.end_span(self.span, error)

    def _cancelled_usage(self, duration: float) -> tuple[Usage, Decimal | None]:
        """The estimate a cancelled call is charged, and its cost."""
        reservation = self.reservation
        if reservation is not None and reservation.budgets:
            worst = reservation.charge
        else:  # nothing reserved (no budget): the span still reports the estimate
            info = self.info
            worst = self._demand().charge(info.max_output_tokens, info.max_reasoning_tokens)
        chunks = getattr(self._reader, "chunks", 0) if self._ttfc is not None else 0
        usage = cancelled_usage(worst, chunks if isinstance(chunks, int) else 1)
        if usage.output == worst.output_tokens and self._price is not None:
            return usage, worst.usd  # the reservation itself, priced as it was reserved
        billed = self._bill(usage, duration, None)
        return usage, billed.usd if billed.complete else None

    def _bill(self, usage: Usage, duration: float, response: ResponseInfo | None) -> Bill:
        response_model = response.response_model if response is not None else None
        if self._price is None and response_model:
            # The request named no known model (an Azure deployment, a decorated call);
            # the response may.
            self._price = self._price_book.lookup(response_model, self.info.provider)
        if self._price is None:
            self._price_book.warn_unknown(response_model or self.info.model, self.info.provider)
        try:
            billed = bill(
                self._price_book,
                self._price,
                usage,
                response,
                self.info.provider,
                seconds=duration,
            )
        except Exception:
            logger.warning("tcc_plugin could not price model %r", self.info.model, exc_info=True)
            return Bill(None, False, {names.COST_UNKNOWN: True})
        if billed.usd is not None and not billed.usd.is_finite():
            # a NaN would poison every ledger it reached
            logger.warning(
                "the price of model %r gave %s USD: cost unknown", self.info.model, billed.usd
            )
            return Bill(None, False, {names.COST_UNKNOWN: True})
        return billed

    def _actual(
        self, usage: Usage | None, cost: Decimal | None, error: BaseException | None
    ) -> Charge | None:
        """What the reservation settles to (``None``: no budget, nothing to settle)."""
        reservation = self.reservation
        if reservation is None or not reservation.budgets:
            return None
        calls = reservation.charge.calls
        if usage is not None:
            # a failure after partial output is charged what it consumed
            actual = Charge.of(usage, cost, calls=calls)
        elif error is None or self._ttfc is not None:
            # No usage reported, or a stream that broke after chunks arrived (tokens were
            # generated, how many is unknown): never under-charge.
            actual = reservation.charge
        else:
            actual = Charge(calls=calls)  # failed before any output: the call still counts
        return actual


def _budget_attributes(reservation: Reservation) -> dict[str, AttributeValue]:
    inner = reservation.budgets[-1]
    attrs: dict[str, AttributeValue] = {names.BUDGET_OUTCOME: reservation.outcome}
    if inner.name:
        attrs[names.BUDGET_NAME] = inner.name
    if reservation.charge.output_tokens:
        attrs[names.BUDGET_RESERVED_OUTPUT_TOKENS] = reservation.charge.output_tokens
    inner.report(attrs)  # no round trip: a shared budget reports its last known account
    return attrs


_DRIVERS = frozenset(
    ("aopen_stream", "arun", "asend_with_retries", "open_stream", "run", "send_with_retries")
)


def __getattr__(name: str) -> Any:
    """The drivers moved to :mod:`tcc_plugin.drivers`; importing them from here works."""
    if name in _DRIVERS:
        from tcc_plugin import drivers

        return getattr(drivers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
