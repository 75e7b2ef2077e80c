"""Many worker processes against one shared budget on a real Redis: no overshoot, no
leak, spans and ledger agree; a SIGKILL'd worker's lease expires; a Redis restart
mid-run loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcc_plugin

from .conftest import RedisServer

redis_ledger = pytest.importorskip("tcc_plugin.integrations.redis_ledger")
RedisLedger = redis_ledger.RedisLedger

WORKER = Path(__file__).with_name("fleet_worker.py")


def start_worker(config: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(worker: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


def totals(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    charged = [s["charged"] for s in summaries]
    return {
        "calls": sum(c["calls"] for c in charged),
        "input_tokens": sum(c["input_tokens"] for c in charged),
        "output_tokens": sum(c["output_tokens"] for c in charged),
        "usd": sum((Decimal(c["usd"]) for c in charged), Decimal(0)),
        "exceeded": sum(s["outcomes"]["exceeded"] for s in summaries),
        "unavailable": sum(s["outcomes"]["unavailable"] for s in summaries),
        "pending": sum(s["pending"] for s in summaries),
    }


def assert_ledger_matches(server: RedisServer, key: str, caps: dict[str, Any], seen: Any) -> None:
    b = tcc_plugin.budget(key=key, ledger=RedisLedger(server.url), **caps)
    spent = b.spent
    assert b.reserved == tcc_plugin.budget(calls=1).spent  # all zero: nothing leaked
    assert b.in_flight == 0
    for limit, cap in b.limits.items():  # 0 overshoot
        assert spent.get(limit) <= cap, (limit, spent.get(limit), cap)
    assert spent.calls == seen["calls"]
    assert spent.output_tokens == seen["output_tokens"]
    assert spent.total_tokens == seen["input_tokens"] + seen["output_tokens"]
    assert spent.usd == seen["usd"]


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), usd=st.decimals("0.5", "3", places=4))
def test_eight_processes_never_overshoot_and_spans_equal_the_ledger(
    redis_server: RedisServer, seed: int, usd: Decimal
) -> None:
    redis_server.client().flushall()
    key = f"fleet-{seed}"
    caps = {"usd": str(usd), "output_tokens": 150_000, "calls": 3_600}
    workers = [
        start_worker(
            {
                "url": redis_server.url,
                "key": key,
                "seed": seed + i,
                "calls": 500,
                "caps": caps,
                "local_calls": 200,
            }
        )
        for i in range(8)
    ]
    summaries = [finish(w) for w in workers]
    assert all(s["async_clients"] == 1 for s in summaries)  # async tasks: redis.asyncio
    seen = totals(summaries)
    assert seen["exceeded"] > 0  # the shared caps did bind
    assert seen["unavailable"] == 0 and seen["pending"] == 0
    assert_ledger_matches(redis_server, key, caps, seen)


def test_a_killed_worker_lease_expires_while_a_live_one_is_renewed(
    server: RedisServer,
) -> None:
    ttl = 1.0
    config = {
        "url": server.url,
        "key": "kill",
        "seed": 0,
        "calls": 1,
        "caps": {"calls": 2},
        "local_calls": 1,
        "lease_ttl": ttl,
        "mode": "hang",
        "max_tokens": 100,
    }
    live, doomed = start_worker(config), start_worker(config)
    try:
        for worker in (live, doomed):
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        b = tcc_plugin.budget(calls=2, key="kill", ledger=RedisLedger(server.url))
        assert b.in_flight == 2 and b.reserved.output_tokens == 200
        with b, pytest.raises(tcc_plugin.BudgetExceeded):  # both slots are held
            tcc_plugin.llm_call(model="m", max_output_tokens=1)(lambda: None)()
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait()
        started = time.monotonic()
        while b.in_flight == 2:  # bounded by the test's timeout, not a timing assertion
            assert time.monotonic() - started < 60 * ttl, "the dead worker's lease never expired"
            time.sleep(ttl / 10)
        time.sleep(3 * ttl)  # the live worker renews its lease meanwhile
        assert b.in_flight == 1 and b.reserved.output_tokens == 100
        assert b.spent.calls == 0
    finally:
        for worker in (live, doomed):
            worker.kill()
            worker.communicate()


@pytest.mark.parametrize("fail_open", [None, {"calls": 20}], ids=["fail-closed", "fail-open"])
def test_a_redis_restart_mid_run_loses_no_spend(
    persistent_server: RedisServer, fail_open: dict[str, int] | None
) -> None:
    server = persistent_server
    caps = {"calls": 100_000}
    workers = [
        start_worker(
            {
                "url": server.url,
                "key": "restart",
                "seed": i,
                "calls": 400,
                "caps": caps,
                "local_calls": 1000,
                "pause": 0.002,
                "fail_open": fail_open,
                "settle_attempts": 1,
            }
        )
        for i in range(4)
    ]
    probe = tcc_plugin.budget(key="restart", ledger=RedisLedger(server.url), **caps)
    while probe.spent.calls < 100:
        time.sleep(0.02)
    server.stop()
    time.sleep(0.5)
    server.start()
    seen = totals([finish(w) for w in workers])
    if fail_open is None:
        assert seen["unavailable"] > 0  # refused while Redis was away, with a clear error
    else:
        assert seen["unavailable"] == 0
    assert seen["pending"] == 0
    assert_ledger_matches(server, "restart", caps, seen)
