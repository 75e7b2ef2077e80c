"""The Redis ledger against a real redis-server: atomic reserve/settle, leases, periods,
nesting, outages (fail closed / fail open, the journal) and bad input."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import tcc_plugin
from tcc_plugin import BudgetExceeded, Usage, llm_call
from tcc_plugin.budget import Charge, Demand, reserve
from tcc_plugin.errors import BudgetUnavailable, LedgerConflict
from tcc_plugin.pricing import PriceBook, TokenPrice

from .conftest import RedisServer

redis_ledger = pytest.importorskip("tcc_plugin.integrations.redis_ledger")
RedisLedger = redis_ledger.RedisLedger

BOOK = PriceBook()
BOOK.override("team-model", TokenPrice(input=Decimal("1.25"), output=Decimal("10")))


def cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal("1.25") * input_tokens + Decimal(10) * output_tokens) / 1_000_000


def model_call(body: Any = None) -> Any:
    """A decorated call: 100 input tokens, ``out`` output tokens, worst case max_tokens."""

    @llm_call(model="team-model", provider="test", input_tokens=100)
    def call(max_tokens: int = 200, out: int = 50, fail: bool = False) -> Usage:
        if body is not None:
            body()
        if fail:
            raise RuntimeError("provider down")
        return Usage(input=100, output=out)

    return call


@pytest.fixture(autouse=True)
def _prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tcc_plugin.lifecycle.default_price_book", lambda: BOOK)


def test_spend_is_shared_by_two_ledgers_and_caps_hold(server: RedisServer) -> None:
    a, b = RedisLedger(server.url), RedisLedger(server.url)  # two "processes"
    call = model_call()
    with tcc_plugin.budget(usd="0.005", key="team-a/daily", ledger=a) as first:
        call(out=100)  # 0.000125 + 0.001
    with tcc_plugin.budget(usd="0.005", key="team-a/daily", ledger=b) as second:
        call(out=200)
        # worst case 100 in + 200 out = 0.002125; spent 0.003250: 0.00175 left
        with pytest.raises(BudgetExceeded) as refused:
            call(out=10)
    assert refused.value.limit == "usd" and refused.value.budget_name == "team-a/daily"
    assert refused.value.spent == cost(100, 100) + cost(100, 200)
    assert first.spent == second.spent
    assert second.spent.usd == Decimal("0.003250")
    assert second.spent.calls == 2 and second.spent.output_tokens == 300
    assert second.reserved.usd == 0 and second.in_flight == 0


def test_reserve_and_settle_are_one_round_trip_each(server: RedisServer) -> None:
    ledger = RedisLedger(server.url)
    call = model_call()
    admin = server.client()

    def commands() -> dict[str, int]:
        stats = admin.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    with tcc_plugin.budget(calls=10, key="k", ledger=ledger):
        call()  # loads the scripts
        before = commands()
        call()
        call()
    after = commands()
    sent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    # Commands run inside the scripts are counted too; those a client alone sends are not.
    assert sent["evalsha"] == 4
    assert not {"eval", "script", "multi", "exec", "ping", "hello"} & set(sent)


def test_scripts_are_reloaded_after_the_server_forgets_them(server: RedisServer) -> None:
    ledger = RedisLedger(server.url)
    call = model_call()
    with tcc_plugin.budget(calls=10, key="k", ledger=ledger) as b:
        call()
        server.client().script_flush()
        call()
        assert b.spent.calls == 2


def test_a_span_says_what_the_shared_budget_had_after_the_call(
    server: RedisServer, telemetry: Any
) -> None:
    call = model_call()
    with tcc_plugin.budget(usd=1, key="t", ledger=RedisLedger(server.url)):
        call(out=40)
    attrs = dict(telemetry.span().attributes)
    assert attrs["tcc.budget.name"] == "t"
    assert attrs["tcc.budget.spent.usd"] == pytest.approx(float(cost(100, 40)))
    assert attrs["tcc.budget.remaining.usd"] == pytest.approx(1 - float(cost(100, 40)))


def test_a_local_budget_nested_in_a_shared_one_charges_both(server: RedisServer) -> None:
    call = model_call()
    team = tcc_plugin.budget(usd=1, key="team", ledger=RedisLedger(server.url))
    with team:
        with tcc_plugin.budget(calls=2) as request:
            call(out=10)
            call(out=20)
            with pytest.raises(BudgetExceeded) as refused:
                call()
        assert refused.value.limit == "calls"
        assert request.spent.calls == 2 and team.spent.calls == 2
        # the shared budget refuses: the local one's reservation is given back
        with tcc_plugin.budget(calls=5) as request2:
            tiny = tcc_plugin.budget(usd="0.0001", key="tiny", ledger=team.ledger)
            with tiny, pytest.raises(BudgetExceeded):
                call()
            assert request2.reserved.calls == 0 and request2.spent.calls == 0
    assert team.reserved.calls == 0 and team.spent.output_tokens == 30


def test_a_clamp_budget_shrinks_to_what_the_shared_store_has_left(server: RedisServer) -> None:
    seen: list[int] = []

    @llm_call(model="team-model", provider="test", input_tokens=0)
    def call(max_tokens: int = 1000) -> Usage:
        seen.append(max_tokens)
        return Usage(input=0, output=max_tokens)

    ledger = RedisLedger(server.url)
    with tcc_plugin.budget(output_tokens=1500, key="c", ledger=ledger, policy="clamp"):
        call()
    other = RedisLedger(server.url)  # a process that has not seen the spend
    with tcc_plugin.budget(output_tokens=1500, key="c", ledger=other, policy="clamp") as b:
        call()
    assert seen == [1000, 500] and b.spent.output_tokens == 1500


def test_threads_share_one_budget_without_overshoot(server: RedisServer) -> None:
    call = model_call()
    team = tcc_plugin.budget(calls=37, key="threads", ledger=RedisLedger(server.url))
    refused: list[BaseException] = []

    def work() -> None:
        with team:
            for _ in range(10):
                try:
                    call(out=1)
                except BudgetExceeded as exc:
                    refused.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert team.spent.calls == 37 and len(refused) == 60 - 37
    assert team.reserved.calls == 0


def test_a_daily_cap_resets_at_midnight_in_its_zone(server: RedisServer) -> None:
    now = [datetime(2026, 3, 1, 21, 30, tzinfo=timezone.utc)]  # 22:30 in Paris
    ledger = RedisLedger(server.url, now=lambda: now[0])
    call = model_call()
    b = tcc_plugin.budget(
        calls=1, key="daily", period="daily", timezone="Europe/Paris", ledger=ledger
    )
    with b:
        call()
        with pytest.raises(BudgetExceeded):
            call()
        now[0] += timedelta(hours=1, minutes=40)  # 00:10 in Paris: a new day
        call()
        assert b.spent.calls == 1
    keys = sorted(k.decode() for k in server.client().keys("*:acct"))
    assert keys == [
        "tcc:budget:{daily}:2026-03-01:acct",
        "tcc:budget:{daily}:2026-03-02:acct",
    ]
    assert server.client().pttl(keys[0]) > 0  # old periods expire on their own


def test_a_monthly_cap_is_kept_per_month(server: RedisServer) -> None:
    now = [datetime(2026, 1, 31, 23, 0, tzinfo=timezone.utc)]
    ledger = RedisLedger(server.url, now=lambda: now[0])
    call = model_call()
    with tcc_plugin.budget(calls=1, key="m", period="monthly", ledger=ledger) as b:
        call()
        now[0] += timedelta(hours=2)
        call()
        assert b.spent.calls == 1
    assert server.client().exists("tcc:budget:{m}:2026-01:acct", "tcc:budget:{m}:2026-02:acct") == 2


def test_fail_closed_refuses_with_budget_unavailable(server: RedisServer) -> None:
    ledger = RedisLedger("redis://127.0.0.1:1/0")  # nothing listens there
    with (
        tcc_plugin.budget(usd=1, key="team", ledger=ledger),
        pytest.raises(BudgetUnavailable) as refused,
    ):
        model_call()()
    message = str(refused.value)
    assert "team" in message and "127.0.0.1:1" in message and "unreachable" in message


def test_settlement_is_journalled_while_redis_is_down_and_replayed(
    persistent_server: RedisServer, tmp_path: Path
) -> None:
    server = persistent_server
    journal = tmp_path / "journal.jsonl"
    ledger = RedisLedger(server.url, journal=journal, settle_attempts=2)
    in_call = model_call(body=server.stop)  # Redis goes away while the call runs
    with tcc_plugin.budget(usd=1, key="outage", ledger=ledger) as b:
        in_call(out=70)
        assert ledger.pending == 1 and journal.read_text().count("\n") == 1
        with pytest.raises(BudgetUnavailable):  # fail closed meanwhile
            model_call()()
        server.start()  # the script cache is empty now: scripts reload by digest
        model_call()(out=30)  # replays the journal first
        assert ledger.pending == 0 and journal.read_text() == ""
        assert b.spent.usd == cost(100, 70) + cost(100, 30)
        assert b.spent.calls == 2 and b.reserved.calls == 0 and b.in_flight == 0
        ledger.replay()  # nothing twice
        assert b.spent.calls == 2


def test_a_journal_left_by_a_dead_process_is_replayed_once(
    persistent_server: RedisServer, tmp_path: Path
) -> None:
    server = persistent_server
    journal = tmp_path / "journal.jsonl"
    ledger = RedisLedger(server.url, journal=journal, settle_attempts=1)
    with tcc_plugin.budget(calls=10, key="j", ledger=ledger) as b:
        model_call(body=server.stop)(out=5)
    server.start()
    again = RedisLedger(server.url, journal=journal)  # the process restarted
    assert again.pending == 1 and again.replay() == 0
    assert RedisLedger(server.url, journal=journal).pending == 0
    assert b.spent.calls == 1 and b.spent.output_tokens == 5


def test_fail_open_runs_under_a_local_cap_and_journals_the_spend(
    persistent_server: RedisServer,
) -> None:
    server = persistent_server
    ledger = RedisLedger(server.url, fail_open={"calls": 2}, settle_attempts=1)
    call = model_call()
    with tcc_plugin.budget(calls=100, key="open", ledger=ledger) as b:
        call(out=1)
        server.stop()
        call(out=2)
        call(out=3)
        with pytest.raises(BudgetExceeded) as refused:
            call()
        assert "local cap while Redis is away" in str(refused.value)
        assert ledger.pending == 2
        server.start()
        call(out=4)  # replays first, which frees the local cap too
        assert ledger.pending == 0
        assert b.spent.calls == 4 and b.spent.output_tokens == 10
        server.stop()
        call(out=5)  # the local cap counts only what Redis has not seen
        server.start()
        ledger.replay()
        assert b.spent.calls == 5


def test_a_malformed_url_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="malformed Redis URL"):
        RedisLedger("http://user:secret@localhost:6379")
    with pytest.raises(ValueError, match="malformed") as bad:
        RedisLedger("redis://:secret@localhost:notaport/0")
    assert "secret" not in str(bad.value)


def test_bad_keys_periods_and_zones_fail_at_construction(server: RedisServer) -> None:
    ledger = RedisLedger(server.url)
    for bad in ("", "a b", "x{y}", "k" * 201):
        with pytest.raises(ValueError, match="budget key"):
            tcc_plugin.budget(calls=1, key=bad, ledger=ledger)
    with pytest.raises(ValueError, match="needs key"):
        tcc_plugin.budget(calls=1, ledger=ledger)
    with pytest.raises(ValueError, match="timezone"):
        tcc_plugin.budget(calls=1, key="z", period="daily", timezone="Mars/Base", ledger=ledger)
    with pytest.raises(ValueError, match="period"):
        tcc_plugin.budget(calls=1, key="z", period="weekly", ledger=ledger)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shared ledger"):
        tcc_plugin.budget(calls=1, period="daily")
    with pytest.raises(ValueError, match="fail_open"):
        RedisLedger(server.url, fail_open={"dollars": 1})


def test_an_auth_failure_is_a_precise_error(tmp_path_factory: pytest.TempPathFactory) -> None:
    locked = RedisServer(tmp_path_factory.mktemp("auth"), password="s3cret")
    locked.start()
    try:
        for url in (
            f"redis://127.0.0.1:{locked.port}/0",
            f"redis://:wrong@127.0.0.1:{locked.port}/0",
        ):
            ledger = RedisLedger(url, fail_open={"calls": 5})  # never fails open on auth
            scope = tcc_plugin.budget(calls=1, key="a", ledger=ledger)
            with scope, pytest.raises(BudgetUnavailable, match="credentials") as refused:
                model_call()()
            assert "wrong" not in str(refused.value)
        with tcc_plugin.budget(calls=1, key="a", ledger=RedisLedger(locked.url)) as b:
            model_call()()
            assert b.spent.calls == 1
    finally:
        locked.stop()


def test_a_key_holding_another_type_is_a_conflict(server: RedisServer) -> None:
    server.client().set("tcc:budget:{taken}:acct", "not a hash")
    scope = tcc_plugin.budget(calls=1, key="taken", ledger=RedisLedger(server.url))
    with scope, pytest.raises(LedgerConflict, match="another type"):
        model_call()()
    assert server.client().get("tcc:budget:{taken}:acct") == b"not a hash"


def test_a_cap_changed_while_reservations_are_open_is_refused(server: RedisServer) -> None:
    other = RedisLedger(server.url)
    errors: list[BaseException] = []

    def meanwhile() -> None:
        with tcc_plugin.budget(calls=5, key="cap", ledger=other):
            try:
                model_call()()
            except LedgerConflict as exc:
                errors.append(exc)

    with tcc_plugin.budget(calls=3, key="cap", ledger=RedisLedger(server.url)) as b:
        model_call(body=meanwhile)()
    assert len(errors) == 1 and "calls cap is 3" in str(errors[0])
    # The refused call was the only provider call: the enclosing one made none of its
    # own, so it charges nothing (one charge per provider call, see docs/core.md).
    assert b.spent.calls == 0 and b.reserved.calls == 0
    # with nothing in flight the new cap is adopted
    with tcc_plugin.budget(calls=5, key="cap", ledger=other) as c:
        model_call()()
        assert c.spent.calls == 1


def test_shared_budget_is_configured_once_and_found_by_name(server: RedisServer) -> None:
    made = tcc_plugin.shared_budget("team-x", ledger=RedisLedger(server.url), calls=2)
    with tcc_plugin.shared_budget("team-x"):
        model_call()()
    assert made.spent.calls == 1
    with pytest.raises(LookupError, match="team-y"):
        tcc_plugin.shared_budget("team-y")


async def test_async_calls_share_the_budget(server: RedisServer) -> None:
    import asyncio

    @llm_call(model="team-model", provider="test", input_tokens=100)
    async def acall(max_tokens: int = 200) -> Usage:
        await asyncio.sleep(0)
        return Usage(input=100, output=7)

    async with tcc_plugin.budget(calls=5, key="async", ledger=RedisLedger(server.url)) as b:
        results = await asyncio.gather(*(acall() for _ in range(8)), return_exceptions=True)
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 3
    assert b.spent.calls == 5 and b.spent.output_tokens == 35 and b.reserved.calls == 0


def test_concurrent_replays_deliver_each_settlement_once(
    persistent_server: RedisServer,
) -> None:
    server = persistent_server
    ledger = RedisLedger(server.url, fail_open={"calls": 50}, settle_attempts=1)
    call = model_call()
    with tcc_plugin.budget(calls=100, key="replays", ledger=ledger) as b:
        call(out=1)
        server.stop()
        for _ in range(20):
            call(out=2)
        assert ledger.pending == 20
        server.start()
        threads = [threading.Thread(target=ledger.replay) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ledger.replay()
        assert ledger.pending == 0
        assert b.spent.calls == 21 and b.spent.output_tokens == 41


def test_a_lease_is_stored_with_its_amounts_and_the_caps_per_dimension(
    server: RedisServer,
) -> None:
    ledger = RedisLedger(server.url)
    b = tcc_plugin.budget(usd="0.5", calls=3, key="packed", ledger=ledger)
    demand = Demand(
        input_tokens=100, max_output_tokens=200, worst_usd=lambda o, r: Decimal("0.002125")
    )
    held = reserve(demand, (b,))
    admin = server.client()
    acct, _, holds, _ = ledger.keys(ledger.base("packed", None, ZoneInfo("UTC")))
    ((lease, amounts),) = admin.hgetall(holds).items()
    # 300 tokens, 200 output, 200 reasoning (unknown: all of the output), $0.002125 in
    # units of 1e-12 dollar, one call
    assert amounts == b"300,200,200,2125000000,1"
    stored = admin.hgetall(acct)
    assert stored[b"cap:usd"] == b"500000000000" and stored[b"cap:calls"] == b"3"
    assert b"cap:total_tokens" not in stored
    assert stored[b"held:usd"] == b"2125000000" and stored[b"inflight"] == b"1"
    held.settle(Charge(150, 50, 0, Decimal("0.0007500000001"), 1))
    stored = admin.hgetall(acct)
    assert stored[b"held:usd"] == b"0" and stored[b"inflight"] == b"0"
    assert stored[b"spent:usd"] == b"750000001" and stored[b"spent:total_tokens"] == b"150"
    assert b.spent.usd == Decimal("0.000750000001")  # rounded up to 1e-12 dollar
    assert admin.hlen(holds) == 0 and lease


def test_lease_ids_differ_in_a_forked_child() -> None:
    import multiprocessing

    ids = redis_ledger._lease_ids
    mine = {ids.next() for _ in range(1000)}
    assert len(mine) == 1000
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=lambda: queue.put([ids.next() for _ in range(1000)]))
    child.start()
    theirs = queue.get(timeout=30)
    child.join()
    assert not mine & set(theirs) and len(set(theirs)) == 1000
    assert {i[:20] for i in theirs} != {i[:20] for i in mine}  # a new prefix, not a new count
