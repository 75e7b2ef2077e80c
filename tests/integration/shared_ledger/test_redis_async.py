"""The Redis ledger's asyncio path against a real redis-server: async calls (decorated
functions, an instrumented AsyncOpenAI client) reserve and settle on the ledger's
``redis.asyncio`` client and never block the event loop on Redis; caps hold under many
concurrent tasks; outages fail closed (or open) and the journal replays; a cancelled
call settles exactly once."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcc_plugin
from tcc_plugin import BudgetExceeded, RetryPolicy, Usage, llm_call
from tcc_plugin.errors import BudgetUnavailable
from tcc_plugin.instrument import instrument
from tcc_plugin.ledger import Charge
from tcc_plugin.pricing import PriceBook, TokenPrice

from ...conftest import Telemetry
from ..conftest import (
    MockAPI,
    chat_chunks,
    chat_completion,
    chat_usage,
    json_response,
    openai_error,
    sse_response,
)
from .conftest import RedisServer

redis_ledger = pytest.importorskip("tcc_plugin.integrations.redis_ledger")
RedisLedger = redis_ledger.RedisLedger
redis_asyncio = pytest.importorskip("redis.asyncio")

BOOK = PriceBook()
BOOK.override("team-model", TokenPrice(input=Decimal("1.25"), output=Decimal("10")))
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


def cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal("1.25") * input_tokens + Decimal(10) * output_tokens) / 1_000_000


@pytest.fixture(autouse=True)
def _prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tcc_plugin.lifecycle.default_price_book", lambda: BOOK)


def acall_of(body: Any = None) -> Any:
    """An async decorated call: 100 input tokens, ``out`` output, worst case max_tokens."""

    @llm_call(model="team-model", provider="test", input_tokens=100)
    async def acall(max_tokens: int = 200, out: int = 50, fail: bool = False) -> Usage:
        if body is not None:
            await body()
        await asyncio.sleep(0)
        if fail:
            raise RuntimeError("provider down")
        return Usage(input=100, output=out)

    return acall


def evalsha_count(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def sync_connections(ledger: Any) -> int:
    """How many connections the ledger's sync client ever opened."""
    return int(ledger.client.connection_pool._created_connections)


async def test_async_calls_reserve_and_settle_on_the_asyncio_client(
    server: RedisServer, async_openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    ledger = RedisLedger(server.url)
    client = instrument(async_openai_client)
    acall = acall_of()
    api.queue(
        json_response(chat_completion(chat_usage(1200, 900, cached=1024, reasoning=768))),
        sse_response(chat_chunks(["4"], chat_usage(10, 5)), asynchronous=True),
    )
    async with tcc_plugin.budget(usd=1, calls=10, key="async-team", ledger=ledger) as b:
        await acall(out=40)  # connects and loads the scripts
        before = evalsha_count(server)
        reply = await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=2000
        )
        stream = await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=50, stream=True
        )
        chunks = [c async for c in stream]
    assert reply.usage.completion_tokens == 900 and len(chunks) == 3
    # two round trips per call (reserve, settle), none of them on the sync client
    assert evalsha_count(server) - before == 4
    assert sync_connections(ledger) == 0
    assert b.spent.calls == 3 and b.spent.output_tokens == 40 + 900 + 5
    assert b.reserved.is_zero() and b.in_flight == 0
    spans = telemetry.spans()
    assert [s.attributes["tcc.budget.outcome"] for s in spans] == ["ok"] * 3  # type: ignore[index]
    # the span reports the account as this call's own (awaited) settlement left it
    last = dict(spans[-1].attributes or {})
    assert last["tcc.budget.spent.calls"] == 3 and last["tcc.budget.remaining.calls"] == 7


async def test_another_task_runs_while_a_reservation_waits_on_redis(
    server: RedisServer,
) -> None:
    """Redis holds the reservation (CLIENT PAUSE WRITE): the event loop goes on; with a
    blocking client the other task could not run, and the call would time out."""
    ledger = RedisLedger(server.url)
    admin = redis_asyncio.Redis(host="127.0.0.1", port=server.port)
    acall = acall_of()
    ran_meanwhile = 0
    async with tcc_plugin.budget(calls=5, key="paused", ledger=ledger) as b:
        await acall()  # connects and loads the scripts
        await admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        call = asyncio.ensure_future(acall(out=7))
        for _ in range(6000):  # bounded: the loop runs this while the call waits on Redis
            info = await admin.info("clients")
            if int(info["blocked_clients"]) >= 1:
                break
            ran_meanwhile += 1
            await asyncio.sleep(0.01)
        assert not call.done()
        await admin.execute_command("CLIENT", "UNPAUSE")
        await call
    await admin.aclose()
    assert b.spent.calls == 2 and b.spent.output_tokens == 57 and b.reserved.is_zero()


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    cap_usd=st.decimals("0.005", "0.05", places=4),
    calls=st.lists(
        st.tuples(st.integers(1, 300), st.integers(0, 300), st.booleans()),
        min_size=10,
        max_size=60,
    ),
)
def test_many_async_tasks_never_overshoot_a_shared_cap(
    redis_server: RedisServer,
    telemetry: Telemetry,
    cap_usd: Decimal,
    calls: list[tuple[int, int, bool]],
) -> None:
    redis_server.client().flushall()
    telemetry_start = len(telemetry.spans())

    @llm_call(model="team-model", provider="test", input_tokens=100)
    async def acall(max_tokens: int, out: int, fail: bool) -> Usage:
        await asyncio.sleep(0)
        if fail:
            raise RuntimeError("provider down")
        return Usage(input=100, output=min(out, max_tokens))

    async def one(max_tokens: int, out: int, fail: bool) -> str:
        try:
            await acall(max_tokens=max_tokens, out=out, fail=fail)
        except BudgetExceeded:
            return "refused"
        except RuntimeError:
            return "failed"
        return "ok"

    async def main() -> tuple[list[str], Any]:
        ledger = RedisLedger(redis_server.url)
        async with tcc_plugin.budget(usd=cap_usd, key="swarm", ledger=ledger) as b:
            outcomes = await asyncio.gather(*(one(*c) for c in calls))
        assert sync_connections(ledger) == 0
        return outcomes, b

    outcomes, b = asyncio.run(main())  # a fresh event loop (and asyncio client) each time
    spans = telemetry.spans()[telemetry_start:]
    charged = [dict(s.attributes or {}) for s in spans]
    charged = [a for a in charged if a.get("tcc.budget.outcome") == "ok"]
    inp = sum(int(a.get("gen_ai.usage.input_tokens", 0)) for a in charged)  # type: ignore[call-overload]
    out = sum(int(a.get("gen_ai.usage.output_tokens", 0)) for a in charged)  # type: ignore[call-overload]
    assert b.spent.usd <= cap_usd  # 0 overshoot
    assert b.reserved.is_zero() and b.in_flight == 0  # reservations back to 0
    assert b.spent.calls == len(charged) == outcomes.count("ok") + outcomes.count("failed")
    assert b.spent.total_tokens == inp + out and b.spent.output_tokens == out
    assert b.spent.usd == cost(inp, out)  # the sum of the spans is the ledger


async def test_redis_down_fails_closed_for_async_calls(server: RedisServer) -> None:
    ledger = RedisLedger("redis://127.0.0.1:1/0")  # nothing listens there
    with pytest.raises(BudgetUnavailable) as refused:
        async with tcc_plugin.budget(usd=1, key="team", ledger=ledger):
            await acall_of()()
    message = str(refused.value)
    assert "team" in message and "127.0.0.1:1" in message and "unreachable" in message


async def test_async_settlement_is_journalled_while_redis_is_down_and_replayed(
    persistent_server: RedisServer, tmp_path: Path
) -> None:
    server = persistent_server
    journal = tmp_path / "journal.jsonl"
    ledger = RedisLedger(server.url, journal=journal, settle_attempts=2)

    async def redis_goes_away() -> None:
        server.stop()

    async with tcc_plugin.budget(usd=1, key="outage", ledger=ledger) as b:
        await acall_of(redis_goes_away)(out=70)  # settled while Redis is away: journalled
        assert ledger.pending == 1 and journal.read_text().count("\n") == 1
        with pytest.raises(BudgetUnavailable):  # fail closed meanwhile
            await acall_of()()
        server.start()  # the script cache is empty now: scripts reload by digest
        await acall_of()(out=30)  # replays the journal first (awaited)
        assert ledger.pending == 0 and journal.read_text() == ""
        assert b.spent.usd == cost(100, 70) + cost(100, 30)
        assert b.spent.calls == 2 and b.reserved.calls == 0 and b.in_flight == 0
        assert await ledger.areplay() == 0  # nothing twice
        assert b.spent.calls == 2
    assert sync_connections(ledger) == 1  # only the budget reads above (b.spent ...)


async def test_fail_open_runs_async_calls_under_a_local_cap(
    persistent_server: RedisServer,
) -> None:
    server = persistent_server
    ledger = RedisLedger(server.url, fail_open={"calls": 2}, settle_attempts=1)
    acall = acall_of()
    async with tcc_plugin.budget(calls=100, key="open", ledger=ledger) as b:
        await acall(out=1)
        server.stop()
        await acall(out=2)
        await acall(out=3)
        with pytest.raises(BudgetExceeded) as refused:
            await acall()
        assert "local cap while Redis is away" in str(refused.value)
        assert ledger.pending == 2
        server.start()
        await acall(out=4)  # replays first, which frees the local cap too
        assert ledger.pending == 0
        assert b.spent.calls == 4 and b.spent.output_tokens == 10


async def test_a_cancelled_async_call_settles_exactly_once(
    server: RedisServer, telemetry: Telemetry
) -> None:
    ledger = RedisLedger(server.url)
    inside = asyncio.Event()

    async def hang() -> None:
        inside.set()
        await asyncio.sleep(3600)

    async with tcc_plugin.budget(calls=5, key="cancel", ledger=ledger) as b:
        call = asyncio.ensure_future(acall_of(hang)(max_tokens=120))
        await inside.wait()
        assert b.in_flight == 1 and b.reserved.output_tokens == 120
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert ledger.pending == 0  # settled on the asyncio client, not journalled
        attrs = dict(telemetry.span().attributes or {})
        assert attrs["tcc.usage.estimated"] is True
        # charged once: the honest estimate of a call cancelled in flight (its worst case)
        assert b.spent.calls == 1 and b.spent.output_tokens == attrs["gen_ai.usage.output_tokens"]
        assert b.reserved.is_zero() and b.in_flight == 0
    settled = server.client().zcard("tcc:budget:{cancel}:done")
    assert settled == 1


async def test_a_call_cancelled_while_redis_holds_its_settlement_is_settled_once(
    server: RedisServer,
) -> None:
    ledger = RedisLedger(server.url)
    admin = redis_asyncio.Redis(host="127.0.0.1", port=server.port)

    async def pause_redis() -> None:  # the call's settlement will wait on Redis
        await admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")

    async with tcc_plugin.budget(calls=5, key="stuck", ledger=ledger) as b:
        await acall_of()()  # connects and loads the scripts
        call = asyncio.ensure_future(acall_of(pause_redis)(out=9))
        for _ in range(6000):  # until the settlement waits on the paused server
            if int((await admin.info("clients"))["blocked_clients"]) >= 1:
                break
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert ledger.pending == 1  # journalled: delivered once Redis answers
        await admin.execute_command("CLIENT", "UNPAUSE")
        await ledger.areplay()  # whether or not Redis had applied it, it counts once
        assert ledger.pending == 0
        assert b.spent.calls == 2 and b.spent.output_tokens == 59
        assert b.reserved.is_zero() and b.in_flight == 0
    await admin.aclose()


def test_one_ledger_serves_several_event_loops(server: RedisServer) -> None:
    """asyncio.run twice, and a loop in another thread meanwhile: each loop gets its own
    asyncio client, closed when its loop ends."""
    ledger = RedisLedger(server.url)
    team = tcc_plugin.budget(calls=100, key="loops", ledger=ledger)
    acall = acall_of()

    async def work(n: int) -> None:
        with team:
            await asyncio.gather(*(acall(out=1) for _ in range(n)))

    async def work_then_close(n: int) -> int:
        await work(n)
        open_clients = len(ledger._sides)
        await ledger.aclose()  # this loop's client, closed before the loop ends
        return open_clients - len(ledger._sides)

    assert asyncio.run(work_then_close(5)) == 1
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(work(7))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    asyncio.run(work(3))
    thread.join()
    assert not errors
    assert not ledger._sides  # every loop's client was closed with its loop
    assert team.spent.calls == 15 and team.reserved.is_zero()
    assert sync_connections(ledger) == 1  # the reads above; the calls used asyncio clients


async def test_async_nesting_clamp_and_hand_over_await_the_store(
    server: RedisServer, async_openai_client: Any, api: MockAPI
) -> None:
    """A local budget inside a shared one, a clamp sized on the store's fresh numbers, and
    a decorated async function whose instrumented client call takes its reservation over:
    all on the asyncio client."""
    seen: list[int] = []

    @llm_call(model="team-model", provider="test", input_tokens=0)
    async def clamped(max_tokens: int = 1000) -> Usage:
        seen.append(max_tokens)
        return Usage(input=0, output=max_tokens)

    first, other = RedisLedger(server.url), RedisLedger(server.url)
    async with tcc_plugin.budget(output_tokens=1500, key="c", ledger=first, policy="clamp"):
        await clamped()
    async with tcc_plugin.budget(output_tokens=1500, key="c", ledger=other, policy="clamp") as b:
        await clamped()  # this process had not seen the spend: refused, then clamped
    assert seen == [1000, 500] and b.spent.output_tokens == 1500

    client = instrument(async_openai_client)
    api.queue(json_response(chat_completion(chat_usage(30, 20))))

    @llm_call(model="o3", provider="openai", input_tokens=30)
    async def agent(max_tokens: int = 100) -> Any:
        return await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=max_tokens
        )

    team = tcc_plugin.budget(calls=5, key="hand", ledger=RedisLedger(server.url))
    async with team:
        async with tcc_plugin.budget(calls=1) as request:
            await agent()
            with pytest.raises(BudgetExceeded):
                await agent()
        assert request.spent.calls == 1 and request.reserved.is_zero()
    assert team.spent.calls == 1 and team.spent.output_tokens == 20
    assert team.reserved.is_zero() and team.in_flight == 0
    assert sync_connections(first) == 0 and sync_connections(other) == 1  # b.spent read


def test_a_release_that_overtakes_its_reservation_leaves_nothing_held(
    server: RedisServer,
) -> None:
    """A reservation cut short (a cancelled task) is journalled for release; if the
    release reaches Redis (on another connection) before the reservation itself, the
    reservation must hold nothing when it lands."""
    ledger = RedisLedger(server.url)
    b = tcc_plugin.budget(calls=5, key="race", ledger=ledger)
    account = b._account
    base = account._base()
    ledger._journalize(redis_ledger._Entry(base, "cut-short", Charge()))
    assert ledger.replay() == 0  # the release lands first
    need = redis_ledger._joined(Charge(calls=1))
    args = ["cut-short", 30_000, "0", account._caps_arg, need, "00000"]
    reply = ledger._scripts["reserve"](keys=ledger.keys(base), args=args)
    assert reply[0] == b"gone"
    assert b.in_flight == 0 and b.reserved.is_zero() and b.spent.calls == 0


async def test_areserve_hands_a_shared_reservation_over_on_the_asyncio_client(
    server: RedisServer,
) -> None:
    from tcc_plugin.budget import Demand
    from tcc_plugin.reservation import areserve

    ledger = RedisLedger(server.url)
    team = tcc_plugin.budget(calls=3, key="handover", ledger=ledger)
    local = tcc_plugin.budget(calls=3)
    demand = Demand(input_tokens=10, max_output_tokens=20)
    outer = await areserve(demand, (team, local))
    inner = await areserve(demand, (team, local), replacing=outer)  # takes the room over
    assert outer.settled and not inner.settled
    assert await inner.asettle(Charge(total_tokens=15, output_tokens=5, calls=1))
    assert not await inner.asettle(Charge(calls=1))  # only the first settlement counts
    last = await areserve(demand, (team,))
    await areserve(demand, (), replacing=last)  # no budget left to hold in: given back
    assert last.settled
    assert sync_connections(ledger) == 0
    assert team.spent.calls == 1 and team.spent.output_tokens == 5 and team.in_flight == 0
    assert local.spent.calls == 1 and local.reserved.is_zero()


async def test_an_async_retry_settles_the_attempt_and_reserves_again_on_the_asyncio_client(
    server: RedisServer, async_openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    ledger = RedisLedger(server.url)
    client = instrument(
        async_openai_client, retry=RetryPolicy(max_attempts=3, async_sleep=no_sleep)
    )
    api.queue(
        json_response(chat_completion(chat_usage(10, 5))),
        json_response(
            openai_error(429, "slow down", "requests", "rate_limit_exceeded"),
            429,
            {"retry-after-ms": "200"},
        ),
        json_response(chat_completion(chat_usage(10, 7))),
    )
    async with tcc_plugin.budget(calls=3, key="retry", ledger=ledger) as b:
        await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=10
        )
        before = evalsha_count(server)
        await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=10
        )
        # reserve, settle the failed attempt, reserve again, settle
        assert evalsha_count(server) - before == 4
    assert sync_connections(ledger) == 0  # (before the reads below, which are sync)
    assert waits == [0.2] and api.count == 3
    assert b.spent.calls == 2 and b.spent.output_tokens == 12  # a retry is the same call
    assert b.reserved.is_zero() and b.in_flight == 0
    assert dict(telemetry.spans()[-1].attributes or {})["tcc.retry.attempts"] == 2


async def test_a_decorated_async_generator_streams_under_a_shared_budget(
    server: RedisServer,
) -> None:
    @llm_call(model="team-model", provider="test", input_tokens=100, usage=lambda c: c[1])
    async def tokens(max_tokens: int = 50) -> Any:
        for i in range(3):
            await asyncio.sleep(0)
            yield (f"t{i}", None)
        yield ("", Usage(input=100, output=3))

    ledger = RedisLedger(server.url)
    async with tcc_plugin.budget(usd=1, key="agen", ledger=ledger) as b:
        texts = [text async for text, _ in tokens()]
        partial = tokens()
        assert (await anext(partial))[0] == "t0"
        await partial.aclose()  # abandoned after one chunk: charged its reservation
    assert texts == ["t0", "t1", "t2", ""]
    assert sync_connections(ledger) == 0  # (before the reads below, which are sync)
    assert b.spent.calls == 2 and b.spent.output_tokens == 3 + 50
    assert b.spent.usd == cost(100, 3) + cost(100, 50)
    assert b.reserved.is_zero() and b.in_flight == 0
