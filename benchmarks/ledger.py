"""Ledger costs: the in-memory ledger and the Redis ledger (a real redis-server).

Prints, with the median and spread of ``--repeats`` runs:
- in-process reserve+settle pairs per second (in-memory ledger);
- the time a budget adds to a call with the OpenTelemetry SDK on: an ``@llm_call``
  function returning an OpenAI chat completion (a dict, and a typed
  ``openai.types.chat.ChatCompletion``) through the whole lifecycle; paired batches
  (unbudgeted, budgeted, in alternating order, CPU time so other load on the machine
  counts less), the difference per pair, its median and spread over all pairs;
- Redis: round trips per budgeted call (EVALSHA counted by the server), the latency a
  Redis-budgeted call adds on loopback (p50/p99), reserve+settle pairs per second from
  ``--processes`` processes, and how long a SIGKILL'd worker's lease takes to return;
- the same for async calls (the ledger's redis.asyncio client): round trips per call,
  added latency p50/p99, and reserve+settle pairs per second from ``--tasks`` asyncio
  tasks in one process, next to one process's sync pairs per second (one thread).

    python benchmarks/ledger.py [--part all|memory|redis] [--repeats 5] [--processes 8]
                                [--seconds 3] [--tasks 32]

Needs ``redis-server`` on PATH (scripts/install-system-deps.sh) and the redis extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any


def _setup_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


BODY = {
    "id": "c",
    "object": "chat.completion",
    "model": "o3",
    "choices": [{"index": 0, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 600,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 500},
    },
}


def _decorated(typed: bool = False) -> Callable[..., Any]:
    """An ``@llm_call`` function answering with :data:`BODY` (typed: as the openai
    SDK's ``ChatCompletion``)."""
    import tcc_plugin

    response: Any = BODY
    if typed:
        from openai.types.chat import ChatCompletion

        body = dict(BODY, created=0)
        body["usage"] = dict(BODY["usage"], total_tokens=1600)
        body["choices"] = [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "4"},
            }
        ]
        response = ChatCompletion.model_validate(body)

    def call(question: str, max_tokens: int = 2000) -> Any:
        return response

    return tcc_plugin.llm_call(model="o3", provider="openai")(call)


def _async_decorated() -> Callable[..., Any]:
    import tcc_plugin

    async def call(question: str, max_tokens: int = 2000) -> dict[str, Any]:
        return BODY

    return tcc_plugin.llm_call(model="o3", provider="openai")(call)


def _pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


# -- in-process ---------------------------------------------------------------------------
def memory_pairs_per_second(n: int) -> float:
    import tcc_plugin
    from tcc_plugin.budget import Charge, Demand, reserve

    b = tcc_plugin.budget(usd=10**9, total_tokens=10**12, calls=10**9)
    demand = Demand(
        input_tokens=1000, max_output_tokens=2000, worst_usd=lambda o, r: Decimal("0.01")
    )
    actual = Charge(1600, 600, 500, Decimal("0.0062"), 1)
    chain = (b,)
    start = time.perf_counter()
    for _ in range(n):
        reserve(demand, chain).settle(actual)
    return n / (time.perf_counter() - start)


def batch_us_per_call(fn: Callable[..., Any], ctx: Any, calls: int) -> float:
    """CPU microseconds per call of ``calls`` calls of ``fn`` inside ``ctx``."""
    with ctx:
        t = time.process_time()
        for _ in range(calls):
            fn("2+2?")
        return (time.process_time() - t) / calls * 1e6


def paired_added_us(
    fn: Callable[..., Any], scope: Callable[[], Any], calls: int, pairs: int
) -> tuple[list[float], list[float]]:
    """Per pair of batches (unbudgeted and budgeted, which first alternating): the
    unbudgeted time per call, and what the budget added to it."""
    bare: list[float] = []
    added: list[float] = []
    for i in range(pairs):
        if i % 2:
            b = batch_us_per_call(fn, scope(), calls)
            a = batch_us_per_call(fn, contextlib.nullcontext(), calls)
        else:
            a = batch_us_per_call(fn, contextlib.nullcontext(), calls)
            b = batch_us_per_call(fn, scope(), calls)
        bare.append(a)
        added.append(b - a)
    return bare, added


# -- Redis --------------------------------------------------------------------------------
@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (bash scripts/install-system-deps.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                tmp,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


def round_trips_per_call(url: str, calls: int) -> float:
    import redis

    import tcc_plugin
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    fn = _decorated()
    admin = redis.Redis.from_url(url)
    with tcc_plugin.budget(calls=10**9, key="rtt", ledger=RedisLedger(url)):
        fn("warm")
        before = admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        for _ in range(calls):
            fn("x")
        after = admin.info("commandstats")["cmdstat_evalsha"]["calls"]
    return (after - before) / calls


def redis_latency_us(url: str, calls: int) -> tuple[float, float, float]:
    """The p50 a Redis budget adds to a call, and the p99 with and without it (a p99
    difference is noise on a shared machine)."""
    import tcc_plugin
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    fn = _decorated()
    ledger = RedisLedger(url)

    def timings(ctx: Any) -> list[float]:
        out = []
        with ctx:
            for _ in range(calls):
                t = time.perf_counter()
                fn("x")
                out.append((time.perf_counter() - t) * 1e6)
        return sorted(out)

    bare = timings(contextlib.nullcontext())
    shared = timings(tcc_plugin.budget(usd=10**9, calls=10**9, key="lat", ledger=ledger))

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))]

    return pct(shared, 0.5) - pct(bare, 0.5), pct(shared, 0.99), pct(bare, 0.99)


def _pairs_worker(url: str, seconds: float, ready: Any, go: Any, out: Any) -> None:
    import tcc_plugin
    from tcc_plugin.budget import Charge, Demand, reserve
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    b = tcc_plugin.budget(usd=10**9, calls=10**12, key="throughput", ledger=RedisLedger(url))
    demand = Demand(
        input_tokens=100, max_output_tokens=200, worst_usd=lambda o, r: Decimal("0.002")
    )
    actual = Charge(150, 50, 0, Decimal("0.0006"), 1)
    reserve(demand, (b,)).settle(actual)  # connected, scripts loaded
    ready.release()
    go.wait()
    n = 0
    cpu = time.process_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        reserve(demand, (b,)).settle(actual)
        n += 1
    out.put((n, time.process_time() - cpu))


def _server_cpu(admin: Any) -> float:
    info = admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_pairs_per_second(url: str, processes: int, seconds: float) -> dict[str, float]:
    """Reserve+settle pairs per second from ``processes`` processes started together
    (each connected and warm first), with the CPU each side spends per pair: the Redis
    server's (INFO cpu; EVALSHA's own usec_per_call from INFO commandstats) and the
    clients' (their process time)."""
    import redis

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    workers = [
        ctx.Process(target=_pairs_worker, args=(url, seconds, ready, go, queue))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.acquire()
    admin = redis.Redis.from_url(url)
    admin.config_resetstat()
    server_before = _server_cpu(admin)
    go.set()
    results = [queue.get() for _ in workers]
    server_cpu = _server_cpu(admin) - server_before
    evalsha = admin.info("commandstats").get("cmdstat_evalsha", {})
    for w in workers:
        w.join()
    pairs = sum(n for n, _ in results)
    return {
        "pairs_per_s": pairs / seconds,
        "server_cpu_us_per_pair": server_cpu / pairs * 1e6,
        "evalsha_us_per_call": float(evalsha.get("usec_per_call", 0.0)),
        "client_cpu_us_per_pair": sum(c for _, c in results) / pairs * 1e6,
    }


def sync_pairs_per_second_one_process(url: str, seconds: float) -> float:
    """Reserve+settle pairs per second from one thread of one process (sync client)."""
    import multiprocessing as mp

    queue: Any = mp.get_context("spawn").Queue()
    _pairs_worker(url, seconds, queue)
    return float(queue.get()) / seconds


# -- Redis, async calls -------------------------------------------------------------------
def async_round_trips_per_call(url: str, calls: int) -> float:
    import redis

    import tcc_plugin
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    admin = redis.Redis.from_url(url)

    def evalsha() -> int:
        return int(admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

    async def main() -> float:
        fn = _async_decorated()
        ledger = RedisLedger(url)
        async with tcc_plugin.budget(calls=10**9, key="artt", ledger=ledger):
            await fn("warm")
            before = evalsha()
            for _ in range(calls):
                await fn("x")
            after = evalsha()
        assert ledger.client.connection_pool._created_connections == 0  # asyncio client only
        return (after - before) / calls

    return asyncio.run(main())


def async_redis_latency_us(url: str, calls: int) -> tuple[float, float, float]:
    """The p50 a Redis budget adds to an async call, and the p99 with and without it."""
    import tcc_plugin
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    async def main() -> tuple[float, float, float]:
        fn = _async_decorated()
        ledger = RedisLedger(url)

        async def timings(ctx: Any) -> list[float]:
            out = []
            async with ctx:
                for _ in range(calls):
                    t = time.perf_counter()
                    await fn("x")
                    out.append((time.perf_counter() - t) * 1e6)
            return sorted(out)

        await timings(tcc_plugin.budget(calls=10**9, key="alat", ledger=ledger))  # warm
        bare = await timings(contextlib.nullcontext())
        shared = await timings(tcc_plugin.budget(usd=10**9, calls=10**9, key="alat", ledger=ledger))
        return _pct(shared, 0.5) - _pct(bare, 0.5), _pct(shared, 0.99), _pct(bare, 0.99)

    return asyncio.run(main())


def loop_stall_us(url: str, calls: int, *, asyncio_client: bool) -> tuple[float, float]:
    """How long other tasks wait while one task makes Redis-budgeted async calls: the
    p99 and max gap between a ticker task's turns, on the ledger's asyncio client or on
    its sync client (``RedisLedger(client=...)`` without ``async_client``, as before)."""
    import redis

    import tcc_plugin
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    async def main() -> tuple[float, float]:
        fn = _async_decorated()
        if asyncio_client:
            ledger = RedisLedger(url)
        else:
            ledger = RedisLedger(client=redis.Redis.from_url(url))
        gaps: list[float] = []
        done = False

        async def ticker() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.ensure_future(ticker())
        async with tcc_plugin.budget(calls=10**9, key="stall", ledger=ledger):
            await fn("warm")
            gaps.clear()
            for _ in range(calls):
                await fn("x")
                await asyncio.sleep(0)  # a turn for the others between calls, at least
        done = True
        await task
        gaps.sort()
        return _pct(gaps, 0.99) * 1e6, gaps[-1] * 1e6

    return asyncio.run(main())


def async_pairs_per_second(url: str, tasks: int, seconds: float) -> float:
    """Reserve+settle pairs per second from ``tasks`` asyncio tasks in one process."""
    import tcc_plugin
    from tcc_plugin.budget import Charge, Demand
    from tcc_plugin.integrations.redis_ledger import RedisLedger
    from tcc_plugin.reservation import areserve

    async def main() -> float:
        b = tcc_plugin.budget(usd=10**9, calls=10**12, key="athroughput", ledger=RedisLedger(url))
        demand = Demand(
            input_tokens=100, max_output_tokens=200, worst_usd=lambda o, r: Decimal("0.002")
        )
        actual = Charge(150, 50, 0, Decimal("0.0006"), 1)
        await (await areserve(demand, (b,))).asettle(actual)  # connects, loads the scripts
        n = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal n
            while time.perf_counter() < end:
                await (await areserve(demand, (b,))).asettle(actual)
                n += 1

        await asyncio.gather(*(worker() for _ in range(tasks)))
        return n / seconds

    return asyncio.run(main())


def _hang_worker(url: str, ttl: float, ready: Any) -> None:
    import tcc_plugin
    from tcc_plugin.budget import Demand, reserve
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    b = tcc_plugin.budget(calls=10, key="lease", ledger=RedisLedger(url, lease_ttl=ttl))
    reserve(Demand(input_tokens=1, max_output_tokens=1), (b,))
    ready.set()
    time.sleep(3600)


def lease_return_seconds(url: str, ttl: float) -> float:
    import tcc_plugin
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    worker = ctx.Process(target=_hang_worker, args=(url, ttl, ready))
    worker.start()
    ready.wait()
    time.sleep(ttl)  # the lease has been renewed at least once
    b = tcc_plugin.budget(calls=10, key="lease", ledger=RedisLedger(url))
    assert b.in_flight == 1
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    killed = time.perf_counter()
    worker.join()
    while b.in_flight:
        time.sleep(0.01)
    return time.perf_counter() - killed


def _report_latency(
    what: str, key: str, runs: list[tuple[float, float, float]], results: dict[str, Any]
) -> None:
    p50s = [r[0] for r in runs]
    print(f"added by a Redis budget to an {what}, us p50: {_spread(p50s)}")
    print(f"p99 us/{what}, Redis budget: {_spread([r[1] for r in runs])}")
    print(f"p99 us/{what}, unbudgeted: {_spread([r[2] for r in runs])}")
    results[f"{key}_added_p50_us"] = statistics.median(p50s)
    results[f"{key}_p99_us"] = statistics.median(r[1] for r in runs)


def memory_section(args: argparse.Namespace, results: dict[str, Any]) -> None:
    import tcc_plugin

    pairs = [memory_pairs_per_second(20_000) for _ in range(args.repeats)]
    print(f"in-memory reserve+settle pairs/s: {_spread(pairs)}")
    results["memory_pairs_per_s"] = statistics.median(pairs)

    for label, typed in (("dict", False), ("ChatCompletion", True)):
        fn = _decorated(typed)
        for _ in range(300):
            fn("warm-up")
        bare: list[float] = []
        added: list[float] = []
        for _ in range(args.repeats):
            a, d = paired_added_us(
                fn, lambda: tcc_plugin.budget(usd=10**9, calls=10**9), args.calls, args.pairs
            )
            bare += a
            added += d
        print(
            f"@llm_call returning an OpenAI {label}, SDK on, CPU us/call over "
            f"{len(added)} pairs of {args.calls}-call batches:"
        )
        print(f"  unbudgeted: {_spread(bare)}")
        print(f"  added by an in-memory budget (usd and calls caps): {_spread(added)}")
        results[f"memory_added_us_{label}"] = statistics.median(added)
        results[f"unbudgeted_us_{label}"] = statistics.median(bare)


def redis_section(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with redis_server() as url:
        trips = round_trips_per_call(url, 500)
        print(f"Redis round trips per budgeted call: {trips:.2f}")
        results["redis_round_trips_per_call"] = trips
        runs = [redis_latency_us(url, args.calls // 3) for _ in range(args.repeats)]
        _report_latency("sync call", "redis", runs, results)
        runs_8 = [
            redis_pairs_per_second(url, args.processes, args.seconds)
            for _ in range(max(1, args.repeats // 2))
        ]
        for key, label in (
            ("pairs_per_s", f"Redis reserve+settle pairs/s from {args.processes} processes"),
            ("server_cpu_us_per_pair", "  Redis server CPU us per pair"),
            ("evalsha_us_per_call", "  EVALSHA usec_per_call (INFO commandstats)"),
            ("client_cpu_us_per_pair", "  client CPU us per pair (all processes)"),
        ):
            values = [r[key] for r in runs_8]
            print(f"{label}: {_spread(values)}")
            results[f"redis_{key}"] = statistics.median(values)
        trips = async_round_trips_per_call(url, 500)
        print(f"Redis round trips per budgeted async call: {trips:.2f}")
        results["redis_async_round_trips_per_call"] = trips
        runs = [async_redis_latency_us(url, args.calls // 3) for _ in range(args.repeats)]
        _report_latency("async call", "redis_async", runs, results)
        for kind in (True, False):
            stalls = [
                loop_stall_us(url, args.calls // 3, asyncio_client=kind)
                for _ in range(args.repeats)
            ]
            name = "asyncio client" if kind else "sync client"
            print(
                f"event loop: p99 gap another task waits during Redis-budgeted async calls, "
                f"{name}, us: {_spread([g[0] for g in stalls])}; "
                f"max {_spread([g[1] for g in stalls])}"
            )
            key = "asyncio" if kind else "sync"
            results[f"loop_gap_p99_us_{key}_client"] = statistics.median(g[0] for g in stalls)
        sync_one = [
            sync_pairs_per_second_one_process(url, args.seconds)
            for _ in range(max(1, args.repeats // 2))
        ]
        async_one = [
            async_pairs_per_second(url, args.tasks, args.seconds)
            for _ in range(max(1, args.repeats // 2))
        ]
        print(f"Redis pairs/s, one process, sync (one thread): {_spread(sync_one)}")
        print(f"Redis pairs/s, one process, {args.tasks} async tasks: {_spread(async_one)}")
        results["redis_sync_one_process_pairs_per_s"] = statistics.median(sync_one)
        results["redis_async_tasks_pairs_per_s"] = statistics.median(async_one)
        back = lease_return_seconds(url, args.lease_ttl)
        print(f"lease returned {back:.2f} s after SIGKILL (lease_ttl {args.lease_ttl} s)")
        results["lease_return_s"] = back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=("all", "memory", "redis"), default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--pairs", type=int, default=4, help="pairs of batches per repeat")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--lease-ttl", type=float, default=2.0)
    parser.add_argument("--tasks", type=int, default=32)
    args = parser.parse_args()
    _setup_sdk()
    results: dict[str, Any] = {}
    if args.part in ("all", "memory"):
        memory_section(args, results)
    if args.part in ("all", "redis"):
        redis_section(args, results)
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    sys.exit(main())
