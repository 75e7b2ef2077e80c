"""Property tests: budgets hold under randomized concurrent call sequences.

Thousands of randomized call sequences run through the real lifecycle
(:func:`tcc_plugin.lifecycle.run` / :func:`~tcc_plugin.lifecycle.arun`) with a fake
*provider* (the adapter and ``send`` below), in threads, in asyncio tasks, and in both at
once, with failures, cancellations, retried transient errors and responses without usage
mixed in. After each sequence, for every budget of a random tree of nested scopes:

- spend <= every cap (where every call declared its worst case; the calls cap always);
- nothing is left reserved and no call is left in flight;
- spent equals exactly the sum of what the provider billed the calls that ran, computed
  here independently (success: its usage and hand-computed cost; failure or
  cancellation: one call; no usage: the call's worst case; refused: nothing; a retried
  call counts once), so a charge counted twice, or lost, shows.

While every admitted call is held in flight at once, the reservations are checked too:
what each budget holds reserved is exactly the worst case of the calls it holds, and
spent + reserved <= every cap. A sequential model test checks each decision (refuse,
admit, clamp to the largest output that fits) against a reference model.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tcc_plugin import Budget, BudgetExceeded, PriceBook, PriceUnknown, TokenPrice, Usage
from tcc_plugin.adapter import Adapter, CallInfo, Clamp, ResponseInfo
from tcc_plugin.budget import LIMITS
from tcc_plugin.drivers import arun, run
from tcc_plugin.retry import RetriesExhausted, RetryPolicy

pytestmark = pytest.mark.filterwarnings("ignore::tcc_plugin.pricing.UnknownModelWarning")

MTOK = Decimal(1_000_000)
WAIT = 20.0  # seconds: only reached if the code under test deadlocks
PRICED, UNPRICED = "prop-priced-model", "prop-unpriced-model"
MAX_ATTEMPTS = 3
Outcome = Literal["ok", "fail", "cancel", "no_usage"]
RetryMode = Literal["none", "argument", "scope"]
Totals = dict[str, Any]  # limit name -> int | Decimal


def zero() -> Totals:
    return {
        "total_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "usd": Decimal(0),
        "calls": 0,
    }


def add(into: Totals, other: Totals) -> None:
    for key in into:
        into[key] += other[key]


def totals_of(charge: Any) -> Totals:
    return {key: getattr(charge, key) for key in LIMITS}


# -- scenario ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """USD per million tokens, every rate explicit (cached input never above input)."""

    input: Decimal
    cached: Decimal
    write: Decimal
    write_1h: Decimal
    output: Decimal
    reasoning: Decimal

    def price(self) -> TokenPrice:
        return TokenPrice(
            input=self.input,
            output=self.output,
            cached_input=self.cached,
            cache_write=self.write,
            cache_write_1h=self.write_1h,
            reasoning=self.reasoning,
        )

    def cost(self, u: Usage) -> Decimal:
        """What ``u`` costs, by hand."""
        micro = (
            (u.input - u.cached_input - u.cache_write) * self.input
            + u.cached_input * self.cached
            + (u.cache_write - u.cache_write_1h) * self.write
            + u.cache_write_1h * self.write_1h
            + (u.output - u.reasoning) * self.output
            + u.reasoning * self.reasoning
        )
        return micro / MTOK

    def worst(self, input_tokens: int, output_tokens: int) -> Decimal:
        """An upper bound of the cost of any split of these tokens, by hand."""
        dearest_in = max(self.input, self.write, self.write_1h)
        dearest_out = max(self.output, self.reasoning)
        return (input_tokens * dearest_in + output_tokens * dearest_out) / MTOK


@dataclass(frozen=True)
class BudgetSpec:
    parent: int | None
    depth: int
    limits: dict[str, Any]
    deadline: float | None
    policy: Literal["raise", "clamp"]
    min_output_tokens: int


@dataclass(frozen=True)
class CallSpec:
    node: int  # the innermost budget of the call's scope
    reenter: bool  # enter the root again inside the call's scope
    priced: bool
    input_tokens: int  # the estimate, and exactly what the provider bills
    max_output: int | None  # per choice; None: the worst case is unknown
    max_reasoning: int | None
    choices: int
    clampable: bool
    outcome: Outcome  # of the attempt after the transient failures
    transient: int  # attempts that first fail with a retryable error
    retry: RetryMode  # how a retry policy applies, if one does
    hold: bool  # stay in flight until every call has been admitted or refused
    out_pct: int
    reasoning_pct: int
    cached_pct: int
    write_pct: int
    write_1h_pct: int
    unknown_output: int  # what the provider writes when no cap bounds it
    seconds: int  # fake wall time (sequential test)


@dataclass(frozen=True)
class Scenario:
    budgets: list[BudgetSpec]
    rates: Rates
    calls: list[CallSpec]

    def path(self, node: int) -> list[int]:
        """Budget indices from the root down to ``node``."""
        out = [node]
        while (parent := self.budgets[out[-1]].parent) is not None:
            out.append(parent)
        return out[::-1]


rate = st.integers(0, 2000).map(lambda c: Decimal(c) / 100)


@st.composite
def rates_(draw: st.DrawFn) -> Rates:
    input_ = draw(rate)
    cached = Decimal(draw(st.integers(0, int(input_ * 100)))) / 100
    return Rates(input_, cached, draw(rate), draw(rate), draw(rate), draw(rate))


def maybe(strategy: st.SearchStrategy[Any], one_in: int = 2) -> st.SearchStrategy[Any]:
    """``strategy``, or ``None`` one time in ``one_in`` or so."""
    return st.integers(1, one_in).flatmap(lambda k: st.none() if k == 1 else strategy)


def sometimes(strategy: st.SearchStrategy[Any], one_in: int = 3) -> st.SearchStrategy[Any]:
    """``strategy`` one time in ``one_in`` or so, else ``None``."""
    return st.integers(1, one_in).flatmap(lambda k: strategy if k == 1 else st.none())


@st.composite
def budget_spec(draw: st.DrawFn, parent: int | None, depth: int) -> BudgetSpec:
    limits = {
        "total_tokens": draw(sometimes(st.integers(0, 2500))),
        "output_tokens": draw(sometimes(st.integers(0, 1200))),
        "reasoning_tokens": draw(sometimes(st.integers(0, 800))),
        "usd": draw(sometimes(st.integers(0, 3000).map(lambda k: Decimal(k) / 10**5))),
        "calls": draw(sometimes(st.integers(0, 12))),
    }
    return BudgetSpec(
        parent=parent,
        depth=depth,
        limits={k: v for k, v in limits.items() if v is not None},
        deadline=draw(sometimes(st.sampled_from([0.0, 1e9]), one_in=15)),
        policy=draw(st.sampled_from(["raise", "clamp"])),
        min_output_tokens=draw(st.sampled_from([1, 1, 1, 5, 20])),
    )


OUTCOMES: list[Outcome] = ["ok", "ok", "ok", "fail", "cancel", "no_usage"]


@st.composite
def call_spec(draw: st.DrawFn, nodes: int) -> CallSpec:
    pct = st.integers(0, 100)
    return CallSpec(
        node=draw(st.integers(0, nodes - 1)),
        reenter=draw(st.booleans()),
        priced=draw(st.integers(1, 15).map(lambda k: k > 1)),
        input_tokens=draw(st.integers(0, 80)),
        max_output=draw(maybe(st.integers(0, 150), one_in=8)),
        max_reasoning=draw(maybe(st.integers(0, 200))),
        choices=draw(st.sampled_from([1, 1, 1, 2, 3])),
        clampable=draw(st.sampled_from([True, True, True, False])),
        outcome=draw(st.sampled_from(OUTCOMES)),
        transient=draw(st.sampled_from([0, 0, 0, 0, 1, 2, 3])),
        retry=draw(st.sampled_from(["none", "argument", "scope"])),
        hold=draw(st.booleans()),
        out_pct=draw(st.sampled_from([0, 100, 100]) | pct),
        reasoning_pct=draw(pct),
        cached_pct=draw(pct),
        write_pct=draw(pct),
        write_1h_pct=draw(pct),
        unknown_output=draw(st.integers(0, 400)),
        seconds=draw(st.integers(0, 3)),
    )


@st.composite
def scenarios(draw: st.DrawFn, min_calls: int = 2, max_calls: int = 8) -> Scenario:
    budgets = [draw(budget_spec(None, 1))]
    for _ in range(draw(st.integers(0, 4))):
        parents = [i for i, b in enumerate(budgets) if b.depth < 3]
        parent = draw(st.sampled_from(parents))
        budgets.append(draw(budget_spec(parent, budgets[parent].depth + 1)))
    calls = draw(st.lists(call_spec(len(budgets)), min_size=min_calls, max_size=max_calls))
    return Scenario(budgets, draw(rates_()), calls)


# -- the fake provider ---------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    model: str
    input_tokens: int
    max_output: int | None
    max_reasoning: int | None
    n: int
    clampable: bool


@dataclass(frozen=True)
class Response:
    usage: Usage | None


class FakeAdapter(Adapter["Request", "Response"]):
    """Translates the fake provider's requests and responses (a provider test double)."""

    def describe(self, request: Request) -> CallInfo:
        return CallInfo(
            model=request.model,
            provider="fake",
            max_output_tokens=request.max_output,
            max_reasoning_tokens=request.max_reasoning,
            input_tokens=request.input_tokens,
            choices=request.n,
            clampable=request.clampable,
        )

    def clamp(self, request: Request, clamp: Clamp) -> Request:
        assert request.clampable, "an unclampable request was clamped"
        return replace(
            request, max_output=clamp.max_output_tokens, max_reasoning=clamp.max_reasoning_tokens
        )

    def read_response(self, response: Response) -> ResponseInfo:
        return ResponseInfo(usage=response.usage)

    def stream_reader(self, request: Request) -> Any:  # pragma: no cover - not streamed
        raise NotImplementedError


ADAPTER = FakeAdapter()


class ProviderError(Exception):
    """The provider failed after doing some work (not retryable)."""


class TransientError(ConnectionError):
    """The connection dropped before the provider did any work (retryable)."""


def request_of(spec: CallSpec) -> Request:
    return Request(
        model=PRICED if spec.priced else UNPRICED,
        input_tokens=spec.input_tokens,
        max_output=spec.max_output,
        max_reasoning=spec.max_reasoning,
        n=spec.choices,
        clampable=spec.clampable,
    )


def worst_case(request: Request, rates: Rates, calls: int = 1) -> Totals:
    """What a reservation of ``request`` holds, computed by hand (a retry of a call
    already counted reserves no further call)."""
    priced = request.model == PRICED
    if request.max_output is None:
        usd = rates.worst(request.input_tokens, 0) if priced else Decimal(0)
        return {**zero(), "total_tokens": request.input_tokens, "usd": usd, "calls": calls}
    output = request.max_output * request.n
    thinking = output
    if request.max_reasoning is not None:
        thinking = min(request.max_reasoning, request.max_output) * request.n
    return {
        "total_tokens": request.input_tokens + output,
        "output_tokens": output,
        "reasoning_tokens": thinking,
        "usd": rates.worst(request.input_tokens, output) if priced else Decimal(0),
        "calls": calls,
    }


def bill(spec: CallSpec, request: Request) -> Usage:
    """What the provider used answering ``request`` (never above its caps)."""
    if request.max_output is None:
        output = spec.unknown_output
    else:
        output = request.max_output * request.n * spec.out_pct // 100
    thinking_cap = output
    if request.max_reasoning is not None:
        thinking_cap = min(output, request.max_reasoning * request.n)
    cached = request.input_tokens * spec.cached_pct // 100
    write = (request.input_tokens - cached) * spec.write_pct // 100
    return Usage(
        input=request.input_tokens,
        cached_input=cached,
        cache_write=write,
        cache_write_1h=write * spec.write_1h_pct // 100,
        output=output,
        reasoning=thinking_cap * spec.reasoning_pct // 100,
    )


@dataclass
class Sent:
    """A call that reached the provider: each attempt's request and what it must be
    charged in all."""

    index: int
    spec: CallSpec
    attempts: list[Request] = field(default_factory=list)  # as sent: clamped if shrunk
    reserved: Totals = field(default_factory=zero)  # what the last attempt holds
    charge: Totals = field(default_factory=zero)  # what the whole call must be charged
    usage: Usage | None = None

    @property
    def request(self) -> Request:
        return self.attempts[-1]

    @property
    def final(self) -> bool:
        """Whether the last attempt got past the transient failures."""
        return len(self.attempts) > self.spec.transient


class Provider:
    """The fake provider's books: every attempt it served, and what it billed."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.sent: dict[int, Sent] = {}
        self._lock = threading.Lock()

    def serve(self, index: int, request: Request) -> Sent:
        """Record an attempt; raises :class:`TransientError` for a transient one."""
        spec = self.scenario.calls[index]
        rates = self.scenario.rates
        with self._lock:
            sent = self.sent.setdefault(index, Sent(index, spec))
        sent.attempts.append(request)
        attempt = len(sent.attempts)
        assert attempt <= (1 if spec.retry == "none" else MAX_ATTEMPTS), "retried too often"
        sent.reserved = worst_case(request, rates, calls=1 if attempt == 1 else 0)
        if not sent.final:  # nothing billed: the call only counts once
            sent.charge = {**zero(), "calls": 1}
            raise TransientError("connection reset before any output")
        if spec.outcome == "ok":
            sent.usage = usage = bill(spec, request)
            sent.charge = {
                "total_tokens": usage.input + usage.output,
                "output_tokens": usage.output,
                "reasoning_tokens": usage.reasoning,
                "usd": rates.cost(usage) if spec.priced else Decimal(0),
                "calls": 1,
            }
        elif spec.outcome in ("no_usage", "cancel"):
            # no usage, or cancelled in flight (an estimate, never zero): charged its
            # reservation, the call once
            sent.charge = {**worst_case(request, rates), "calls": 1}
        else:  # failed after partial work: nothing billed is known
            sent.charge = {**zero(), "calls": 1}
        return sent


def respond(sent: Sent) -> Response:
    if sent.spec.outcome == "fail":
        raise ProviderError("connection reset after partial output")
    if sent.spec.outcome == "cancel":  # a cancellation reaching a sync call
        raise asyncio.CancelledError()
    return Response(sent.usage)


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def retry_policy() -> RetryPolicy:
    """Retries at once (no real sleeping), up to :data:`MAX_ATTEMPTS` attempts."""
    return RetryPolicy(
        max_attempts=MAX_ATTEMPTS,
        initial_wait=0,
        max_wait=0,
        jitter=0,
        sleep=lambda seconds: None,
        async_sleep=no_sleep,
    )


class Gate:
    """Holds the ``hold`` calls in flight until every call was admitted or refused."""

    def __init__(self, parties: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self.parties = parties
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.loop = loop
        self.arrived_async = asyncio.Event() if loop else None
        self.released_async = asyncio.Event() if loop else None

    def arrive(self) -> None:
        with self._lock:
            self._count += 1
            assert self._count <= self.parties
            done = self._count == self.parties
        if done:
            self.arrived.set()
            if self.loop is not None and self.arrived_async is not None:
                self.loop.call_soon_threadsafe(self.arrived_async.set)

    def release(self) -> None:
        """Let the held calls go (call from the event loop's thread, if any)."""
        self.released.set()
        if self.released_async is not None:
            self.released_async.set()


# -- running calls -------------------------------------------------------------------------
@dataclass
class Run:
    """One scenario on its way: budgets, price book, provider, results."""

    scenario: Scenario
    clock: Callable[[], float] | None = None
    deadlines: list[float | None] | None = None  # instead of the scenario's
    budgets: list[Budget] = field(init=False)
    book: PriceBook = field(init=False)
    provider: Provider = field(init=False)
    policy: RetryPolicy = field(default_factory=retry_policy)
    results: dict[int, BaseException | Response] = field(default_factory=dict)
    snapshot: list[tuple[Totals, Totals, int]] | None = None
    held: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        sc = self.scenario
        deadlines = self.deadlines or [spec.deadline for spec in sc.budgets]
        extra: dict[str, Any] = {} if self.clock is None else {"clock": self.clock}
        self.budgets = [
            Budget(
                **spec.limits,
                deadline=deadline,
                policy=spec.policy,
                min_output_tokens=spec.min_output_tokens,
                name=f"b{i}",
                **extra,
            )
            for i, (spec, deadline) in enumerate(zip(sc.budgets, deadlines, strict=True))
        ]
        self.book = PriceBook(use_genai_prices=False)
        self.book.override(PRICED, sc.rates.price())
        self.provider = Provider(sc)

    @contextmanager
    def scope(self, index: int) -> Iterator[RetryPolicy | None]:
        """Inside the root (entered by the caller), enter the rest of the call's path
        (and the retry policy, if it applies as a scope); yields the policy to pass."""
        spec = self.scenario.calls[index]
        with ExitStack() as stack:
            for node in self.scenario.path(spec.node)[1:]:
                stack.enter_context(self.budgets[node])
            if spec.reenter:
                stack.enter_context(self.budgets[0])
            stack.enter_context(self.policy if spec.retry == "scope" else nullcontext())
            yield self.policy if spec.retry == "argument" else None

    def take_snapshot(self) -> None:
        self.snapshot = [
            (totals_of(b.spent), totals_of(b.reserved), b.in_flight) for b in self.budgets
        ]
        self.held = set(self.provider.sent) - set(self.results)

    # sync calls (threads)
    def call(self, index: int, gate: Gate) -> None:
        spec = self.scenario.calls[index]
        arrived = False

        def send(request: Request) -> Response:
            nonlocal arrived
            sent = self.provider.serve(index, request)
            if spec.hold or spec.outcome == "cancel":
                arrived = True
                gate.arrive()
                assert gate.released.wait(WAIT), "never released"
            return respond(sent)

        try:
            with self.scope(index) as retry:
                request = request_of(spec)
                self.results[index] = run(ADAPTER, request, send, price_book=self.book, retry=retry)
        except BaseException as exc:
            self.results[index] = exc
        finally:
            if not arrived:
                gate.arrive()

    # async calls
    async def acall(self, index: int, gate: Gate) -> None:
        spec = self.scenario.calls[index]
        arrived = False
        released = gate.released_async
        assert released is not None

        async def send(request: Request) -> Response:
            nonlocal arrived
            sent = self.provider.serve(index, request)
            await asyncio.sleep(0)  # some work done
            if spec.outcome == "cancel":
                arrived = True
                gate.arrive()
                await asyncio.Event().wait()  # until the task is cancelled
            if spec.hold:
                arrived = True
                gate.arrive()
                await released.wait()
            if spec.outcome == "fail":
                raise ProviderError("stream broke after partial output")
            return Response(sent.usage)

        await asyncio.sleep(0)
        try:
            with self.scope(index) as retry:
                response: Response = await arun(
                    ADAPTER, request_of(spec), send, price_book=self.book, retry=retry
                )
                self.results[index] = response
        except BaseException as exc:  # CancelledError included: record it, end the task
            self.results[index] = exc
        finally:
            if not arrived:
                gate.arrive()

    def run_threads(self) -> None:
        calls = range(len(self.scenario.calls))
        gate = Gate(len(calls))
        barrier = threading.Barrier(len(calls))

        def worker(index: int) -> None:
            barrier.wait(WAIT)  # start together: reservations race
            self.call(index, gate)

        with self.budgets[0], ThreadPoolExecutor(len(calls)) as pool:
            futures = [pool.submit(contextvars.copy_context().run, worker, i) for i in calls]
            try:
                assert gate.arrived.wait(WAIT), "calls never all arrived"
                self.take_snapshot()
            finally:
                gate.release()
            for f in futures:
                f.result()

    async def run_async(self, in_threads: Callable[[int], bool] = lambda i: False) -> None:
        loop = asyncio.get_running_loop()
        n = len(self.scenario.calls)
        gate = Gate(n, loop)
        threaded = [i for i in range(n) if in_threads(i)]
        assert gate.arrived_async is not None
        with self.budgets[0], ThreadPoolExecutor(max(len(threaded), 1)) as pool:
            tasks: dict[int, asyncio.Future[None]] = {}
            for i in range(n):
                if i in threaded:
                    ctx = contextvars.copy_context()
                    tasks[i] = loop.run_in_executor(pool, ctx.run, self.call, i, gate)
                else:
                    tasks[i] = asyncio.create_task(self.acall(i, gate))
            try:
                await asyncio.wait_for(gate.arrived_async.wait(), WAIT)
                self.take_snapshot()
            finally:
                for i, task in tasks.items():
                    if i not in threaded and self.scenario.calls[i].outcome == "cancel":
                        task.cancel()
                gate.release()
            outcomes = await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert all(o is None for o in outcomes), outcomes


# -- the properties ------------------------------------------------------------------------
def note_coverage(r: Run) -> None:
    """What the example exercised (``pytest --hypothesis-show-statistics``)."""
    sent = r.provider.sent
    results = r.results
    refused = [e for e in results.values() if isinstance(e, (BudgetExceeded, PriceUnknown))]
    event("refused", any(isinstance(e, BudgetExceeded) for e in refused))
    event("refused: price unknown", any(isinstance(e, PriceUnknown) for e in refused))
    event("refused: deadline", any(getattr(e, "limit", "") == "deadline" for e in refused))
    event("refused on a retry", any(isinstance(results[i], BudgetExceeded) for i in sent))
    event("retried", any(len(s.attempts) > 1 for s in sent.values()))
    event("clamped", any(a != request_of(s.spec) for s in sent.values() for a in s.attempts))
    event("held in flight at once", min(len(r.held), 3))
    for outcome in ("ok", "fail", "cancel", "no_usage"):
        event(f"sent {outcome}", any(s.final and s.spec.outcome == outcome for s in sent.values()))
    event("unknown worst case sent", any(s.request.max_output is None for s in sent.values()))


def check_refusal(r: Run, index: int, result: object) -> None:
    """A refusal names a limit (or the missing price) of the call's own chain."""
    sc = r.scenario
    spec = sc.calls[index]
    chain = sc.path(spec.node)
    assert isinstance(result, (BudgetExceeded, PriceUnknown)), repr(result)
    if isinstance(result, PriceUnknown):
        assert not spec.priced
        assert any("usd" in sc.budgets[b].limits for b in chain)
        return
    names = {f"b{b}": b for b in chain}
    assert result.budget_name in names, (result.budget_name, chain)
    k = names[result.budget_name]
    assert result.limit in sc.budgets[k].limits or (
        result.limit == "deadline" and r.budgets[k].deadline is not None
    ), result


def check_result(r: Run, sent: Sent, result: object) -> None:
    """The caller got what the provider's last attempt led to."""
    spec = sent.spec
    if sent.final:
        expected: type[BaseException] | type[Response] = {
            "ok": Response,
            "no_usage": Response,
            "fail": ProviderError,
            "cancel": asyncio.CancelledError,
        }[spec.outcome]
        assert isinstance(result, expected), repr(result)
    elif spec.retry == "none":
        assert isinstance(result, TransientError), repr(result)
    elif len(sent.attempts) == MAX_ATTEMPTS:
        assert isinstance(result, RetriesExhausted), repr(result)
    else:  # the retry found no room left
        check_refusal(r, sent.index, result)
        assert isinstance(result, BudgetExceeded)


def check_clamps(sc: Scenario, sent: Sent) -> None:
    """A clamp only ever shrinks the request, and never below the chain's floor."""
    chain = sc.path(sent.spec.node)
    original = request_of(sent.spec)
    for request in sent.attempts:
        if request == original:
            continue
        assert original.clampable
        assert request.max_output is not None
        if original.max_output is not None:
            assert request.max_output <= original.max_output
        assert request.max_output >= max(sc.budgets[b].min_output_tokens for b in chain)
        if original.max_reasoning is not None:
            assert request.max_reasoning is not None
            assert request.max_reasoning <= original.max_reasoning
            assert request.max_reasoning > 0 or original.max_reasoning == 0
            assert request.max_reasoning <= request.max_output
        assert any(sc.budgets[b].policy == "clamp" for b in chain)


def check(r: Run) -> None:
    sc = r.scenario
    sent = r.provider.sent
    assert set(r.results) == set(range(len(sc.calls)))
    for i, result in r.results.items():
        if i in sent:
            check_result(r, sent[i], result)
            check_clamps(sc, sent[i])
        else:  # refused before reaching the provider
            check_refusal(r, i, result)
    note_coverage(r)

    for index, (b, spec) in enumerate(zip(r.budgets, sc.budgets, strict=True)):
        charged = [s for s in sent.values() if index in sc.path(s.spec.node)]
        expected = zero()
        for s in charged:
            add(expected, s.charge)
        # Nothing charged twice, nothing lost.
        assert totals_of(b.spent) == expected, (b, expected)
        # Nothing left reserved or in flight.
        assert totals_of(b.reserved) == zero(), b
        assert b.in_flight == 0, b
        # Spend within every cap, where every call declared its worst case.
        bounded = all(a.max_output is not None for s in charged for a in s.attempts)
        for limit, cap in spec.limits.items():
            if limit == "calls" or bounded:
                assert expected[limit] <= cap, (b, limit, expected[limit], cap)
        # While every admitted call was held in flight at once.
        if r.snapshot is not None:
            spent, reserved, in_flight = r.snapshot[index]
            holding = [s for s in charged if s.index in r.held]
            assert in_flight == len(holding), (b, in_flight, len(holding))
            held = zero()
            for s in holding:
                add(held, s.reserved)
            assert reserved == held, (b, reserved, held)
            for limit, cap in spec.limits.items():
                if limit == "calls" or bounded:
                    assert spent[limit] + reserved[limit] <= cap, (b, limit)


CONCURRENT = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@CONCURRENT
@given(scenarios())
def test_threads_hold_every_cap(scenario: Scenario) -> None:
    r = Run(scenario)
    r.run_threads()
    check(r)


@CONCURRENT
@given(scenarios())
def test_asyncio_tasks_hold_every_cap(scenario: Scenario) -> None:
    r = Run(scenario)
    asyncio.run(r.run_async())
    check(r)


@CONCURRENT
@given(scenarios(min_calls=3, max_calls=10), st.data())
def test_threads_and_tasks_together_hold_every_cap(scenario: Scenario, data: st.DataObject) -> None:
    threaded = data.draw(st.sets(st.integers(0, len(scenario.calls) - 1)), label="in threads")
    r = Run(scenario)
    asyncio.run(r.run_async(lambda i: i in threaded))
    check(r)


# -- one call at a time, against a reference model -----------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Model:
    """The budget rules of DESIGN.md, written out plainly, over the expected ledger."""

    def __init__(self, scenario: Scenario, deadlines: list[float | None]) -> None:
        self.sc = scenario
        self.deadlines = deadlines
        self.spent = [zero() for _ in scenario.budgets]

    def violations(
        self, chain: list[int], request: Request, calls: int = 1
    ) -> list[tuple[str, str]]:
        """(budget name, limit) pairs ``request``'s worst case does not fit."""
        need = worst_case(request, self.sc.rates, calls)
        tokens_known = request.max_output is not None
        usd_known = tokens_known and request.model == PRICED
        bad = []
        for k in chain:
            for limit, cap in self.sc.budgets[k].limits.items():
                have = self.spent[k][limit]
                known = {"calls": True, "usd": usd_known}.get(limit, tokens_known)
                if have + need[limit] > cap or (not known and have >= cap):
                    bad.append((f"b{k}", limit))
        return bad

    def decide(
        self, index: int, attempt: int, now: float, sent: Request | None, result: object
    ) -> None:
        """Was the lifecycle's decision on attempt ``attempt`` of call ``index`` (the
        request it sent, or the refusal) the one the rules demand?"""
        spec = self.sc.calls[index]
        chain = self.sc.path(spec.node)
        budgets = [self.sc.budgets[k] for k in chain]
        original = request_of(spec)
        calls = 1 if attempt == 1 else 0  # a retry is the same call
        if not spec.priced and any("usd" in b.limits for b in budgets):
            assert attempt == 1 and sent is None and isinstance(result, PriceUnknown), result
            return
        late = [f"b{k}" for k in chain if (d := self.deadlines[k]) is not None and now >= d]
        if late:
            assert sent is None and isinstance(result, BudgetExceeded), result
            assert (result.limit, result.budget_name) == ("deadline", late[0])
            return
        bad = self.violations(chain, original, calls)
        if not bad:
            assert sent is not None, f"refused a call that fits: {result!r}"
            assert sent == original
            return
        by_name = {f"b{k}": self.sc.budgets[k] for k in chain}
        if not spec.clampable or any(
            by_name[name].policy == "raise" or limit == "calls" for name, limit in bad
        ):
            assert sent is None and isinstance(result, BudgetExceeded), result
            assert (result.budget_name, result.limit) in bad
            return
        # Every budget that binds clamps: the largest request that fits, or a refusal
        # when not even the smallest useful one does.
        floor = max(b.min_output_tokens for b in budgets)
        thinking = original.max_reasoning
        if sent is None:
            assert isinstance(result, BudgetExceeded), result
            assert (result.budget_name, result.limit) in bad
            if original.max_output is not None and original.max_output < floor:
                return
            if thinking == 0:  # a zero thinking budget cannot be clamped (see report)
                return
            smallest = replace(
                original, max_output=floor, max_reasoning=None if thinking is None else 1
            )
            assert self.violations(chain, smallest, calls), f"refused, yet {smallest} fits"
            return
        assert sent != original and sent.max_output is not None
        assert self.violations(chain, sent, calls) == [], f"clamped to {sent}: does not fit"
        assert sent.max_output >= floor
        if original.max_output is not None:
            assert sent.max_output <= original.max_output
            if sent.max_output < original.max_output:
                bigger = replace(sent, max_output=sent.max_output + 1)
                assert self.violations(chain, bigger, calls), f"clamped to {sent}; {bigger} fits"
        if thinking is None:
            assert sent.max_reasoning is None
        else:
            assert sent.max_reasoning is not None
            assert sent.max_reasoning <= min(thinking, sent.max_output)
            assert sent.max_reasoning > 0 or thinking == 0
            if sent.max_reasoning < min(thinking, sent.max_output):
                more = replace(sent, max_reasoning=sent.max_reasoning + 1)
                assert self.violations(chain, more, calls), f"clamped to {sent}; {more} fits"

    def check(self, index: int, now: float, sent: Sent | None, result: object) -> None:
        """Check every attempt of call ``index``, charging the model's ledger as the
        lifecycle should have."""
        spec = self.sc.calls[index]
        chain = self.sc.path(spec.node)
        attempts = sent.attempts if sent is not None else []
        for attempt in range(1, len(attempts) + 2):
            request = attempts[attempt - 1] if attempt <= len(attempts) else None
            if request is None and sent is not None and not isinstance(result, BudgetExceeded):
                break  # the last attempt ended the call: no further decision was made
            self.decide(index, attempt, now, request, result)
            if request is None:
                break
            if attempt <= spec.transient:  # failed, nothing billed; counted once
                for k in chain:
                    self.spent[k]["calls"] += 1 if attempt == 1 else 0
            else:
                assert sent is not None
                final = {**sent.charge, "calls": 1 if attempt == 1 else 0}
                for k in chain:
                    add(self.spent[k], final)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios(min_calls=1, max_calls=12), st.data())
def test_each_decision_matches_the_reference_model(scenario: Scenario, data: st.DataObject) -> None:
    deadlines = [
        data.draw(sometimes(st.integers(0, 12).map(float)), label=f"deadline b{i}")
        for i in range(len(scenario.budgets))
    ]
    clock = FakeClock()
    r = Run(scenario, clock=clock, deadlines=deadlines)
    model = Model(scenario, deadlines)
    for b in r.budgets:
        b.start()  # every deadline counts from 0
    with r.budgets[0]:
        for index, spec in enumerate(scenario.calls):
            now = clock.now

            def send(request: Request, index: int = index, spec: CallSpec = spec) -> Response:
                sent = r.provider.serve(index, request)
                clock.now += spec.seconds  # the (last) attempt takes a while
                return respond(sent)

            result: BaseException | Response
            try:
                with r.scope(index) as retry:
                    result = run(ADAPTER, request_of(spec), send, price_book=r.book, retry=retry)
            except BaseException as exc:
                result = exc
            r.results[index] = result
            sent = r.provider.sent.get(index)
            if sent is not None:
                check_result(r, sent, result)
            model.check(index, now, sent, result)
            for b, expected in zip(r.budgets, model.spent, strict=True):
                assert totals_of(b.spent) == expected, (b, expected)
                assert totals_of(b.reserved) == zero() and b.in_flight == 0
    check(r)
