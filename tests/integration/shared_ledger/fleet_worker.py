"""One worker process of the fleet tests (run as a script, not collected by pytest).

    python fleet_worker.py '<json config>'

Makes ``calls`` decorated calls against a shared budget on Redis, half from two threads
(the ledger's sync client) and half from asyncio tasks (its asyncio client), with random
output sizes, failures and cancellations, and prints one JSON line summarising what its
own spans recorded (read back from an in-memory exporter). Mode ``hang`` reserves one
call and blocks in it until killed.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import random
import sys
import threading
import time
from decimal import Decimal
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tcc_plugin
from tcc_plugin import BudgetExceeded, BudgetUnavailable, Usage, llm_call
from tcc_plugin.integrations.redis_ledger import RedisLedger

SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)
tcc_plugin.set_price("team-model", input="1.25", output="10", provider="test")


def main() -> None:
    config: dict[str, Any] = json.loads(sys.argv[1])
    rng = random.Random(config["seed"])
    ledger = RedisLedger(
        config["url"],
        lease_ttl=config.get("lease_ttl", 30.0),
        fail_open=config.get("fail_open"),
        settle_attempts=config.get("settle_attempts", 3),
    )
    caps = config["caps"]
    team = tcc_plugin.budget(
        usd=caps.get("usd"),
        output_tokens=caps.get("output_tokens"),
        calls=caps.get("calls"),
        key=config["key"],
        ledger=ledger,
    )
    pause = config.get("pause", 0.0)

    if config.get("mode") == "hang":

        @llm_call(model="team-model", provider="test", input_tokens=100)
        def hang(max_tokens: int) -> Usage:
            print("ready", flush=True)
            time.sleep(3600)
            return Usage(input=100, output=0)

        with team:
            hang(max_tokens=config["max_tokens"])
        return

    @llm_call(model="team-model", provider="test", input_tokens=100)
    def call(max_tokens: int, out: int, fail: bool) -> Usage:
        if pause:
            time.sleep(pause)
        if fail:
            raise RuntimeError("provider error")
        return Usage(input=100, output=out)

    @llm_call(model="team-model", provider="test", input_tokens=100)
    async def acall(max_tokens: int, out: int, fail: bool, slow: bool) -> Usage:
        await asyncio.sleep(0.05 if slow else pause)
        if fail:
            raise RuntimeError("provider error")
        return Usage(input=100, output=out)

    outcomes: dict[str, int] = {"ok": 0, "exceeded": 0, "unavailable": 0, "failed": 0}
    lock = threading.Lock()

    def note(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    def plan(n: int) -> list[tuple[int, int, bool, bool]]:
        out = []
        for _ in range(n):
            max_tokens = rng.randint(1, 200)
            out.append(
                (max_tokens, rng.randint(0, max_tokens), rng.random() < 0.1, rng.random() < 0.05)
            )
        return out

    per_thread = config["calls"] // 4
    thread_plans = [plan(per_thread) for _ in range(2)]
    async_plan = plan(config["calls"] - 2 * per_thread)

    def run_sync(items: list[tuple[int, int, bool, bool]]) -> None:
        with tcc_plugin.budget(calls=config["local_calls"]):  # a local budget nested inside
            for max_tokens, out, fail, _ in items:
                try:
                    call(max_tokens=max_tokens, out=out, fail=fail)
                    note("ok")
                except BudgetExceeded:
                    note("exceeded")
                except BudgetUnavailable:
                    note("unavailable")
                except RuntimeError:
                    note("failed")

    async def one(max_tokens: int, out: int, fail: bool, slow: bool) -> None:
        try:
            if slow:  # cancelled mid-call
                await asyncio.wait_for(acall(max_tokens, out, fail, slow), timeout=0.005)
            else:
                await acall(max_tokens, out, fail, slow)
            note("ok")
        except BudgetExceeded:
            note("exceeded")
        except BudgetUnavailable:
            note("unavailable")
        except (RuntimeError, asyncio.TimeoutError):
            note("failed")

    async_clients: list[int] = []

    async def run_async() -> None:
        with team:
            for i in range(0, len(async_plan), 4):
                await asyncio.gather(*(one(*item) for item in async_plan[i : i + 4]))
        async_clients.append(len(ledger._sides))  # the tasks' round trips: redis.asyncio

    with team:
        # each thread joins the team budget through a copy of this context
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(run_sync, p))
            for p in thread_plans
        ]
        for t in threads:
            t.start()
        asyncio.run(run_async())
        for t in threads:
            t.join()
    ledger.close()  # delivers whatever the journal still holds

    charged = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "usd": Decimal(0)}
    for span in SPANS.get_finished_spans():
        attrs = span.attributes or {}
        if attrs.get("tcc.budget.outcome") not in ("ok", "clamped"):
            continue  # refused before the call: nothing charged
        inp = int(attrs.get("gen_ai.usage.input_tokens", 0))  # type: ignore[arg-type]
        out = int(attrs.get("gen_ai.usage.output_tokens", 0))  # type: ignore[arg-type]
        charged["calls"] += 1
        charged["input_tokens"] += inp
        charged["output_tokens"] += out
        charged["usd"] += (Decimal("1.25") * inp + Decimal(10) * out) / 1_000_000
    charged["usd"] = str(charged["usd"])
    summary = {"outcomes": outcomes, "charged": charged, "pending": ledger.pending}
    summary["async_clients"] = async_clients[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
