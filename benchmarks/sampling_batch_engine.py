"""The batch path on the embedded engine: a wave of k samples of one prompt as one
request with ``n=k`` (``choices_batch``), against k separate concurrent requests, both
through the library (``aself_consistency`` over an instrumented ``openai.AsyncOpenAI``,
``launch_all()``, no stop rule), on llama-server with Qwen2.5-Coder-0.5B.

Per repetition (the two orders alternate), for each way: the group's wall time, the
tokens the budget was charged (output, and total with the prompt), and the prompt
tokens the server actually evaluated (``llamacpp:prompt_tokens_total`` from its
``/metrics``; llama-server reuses a cached prompt prefix across requests). Prints
medians and ranges, and the ratios batch / separate. Runs on demand (it starts the
engine; the first run on a machine builds it), never in CI.

    python benchmarks/sampling_batch_engine.py [--k 4] [--reps 7] [--max-tokens 64]
        [--no-prompt-cache]   # llama-server's cache_prompt off: every request evaluates
                              # its prompt, as a server without prefix caching would
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tcc_plugin import budget
from tcc_plugin.app.local_engine import QWEN25_CODER_05B, LocalEngine
from tcc_plugin.integrations.openai_batch import choices_batch
from tcc_plugin.sampling import aself_consistency, launch_all

PROMPT = [
    {
        "role": "user",
        "content": "A farmer has 17 sheep; all but 9 run away. How many are left? "
        "Think step by step, then write 'Answer: N'.",
    }
]

Row = dict[str, float]


def prompt_tokens_evaluated(root: str) -> float:
    text = httpx.get(f"{root}/metrics", timeout=30).text
    found = re.search(r"^llamacpp:prompt_tokens_total\s+(\S+)", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


async def run(root: str, group: Callable[[], Awaitable[Any]]) -> Row:
    before = prompt_tokens_evaluated(root)
    async with budget(output_tokens=1_000_000) as b:
        t0 = time.perf_counter()
        result = await group()
        wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "output": b.spent.output_tokens,
        "total": b.spent.total_tokens,
        "calls": b.spent.calls,
        "prompt_evaluated": prompt_tokens_evaluated(root) - before,
        "completed": result.completed,
    }


def summary(rows: list[Row], key: str) -> str:
    values = [r[key] for r in rows]
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


async def measure(k: int, reps: int, max_tokens: int, prompt_cache: bool) -> None:
    engine = LocalEngine(QWEN25_CODER_05B, parallel=k, ctx_size=512, progress=False)
    engine.start()
    client = engine.async_client(gpu_price=1.0)
    request: dict[str, Any] = {
        "model": engine.alias,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0.8,
    }
    if not prompt_cache:
        request["extra_body"] = {"cache_prompt": False}
    source = choices_batch(client, **request)

    async def batch() -> Any:
        return await aself_consistency(source, n=k, launch=launch_all(), stop=None)

    async def separate() -> Any:
        return await aself_consistency(
            lambda: client.chat.completions.create(**request), n=k, launch=launch_all(), stop=None
        )

    try:
        root = engine.base_url
        await client.chat.completions.create(**request)  # warm up, fill the prompt cache
        rows: dict[str, list[Row]] = {"batch": [], "separate": []}
        ways = {"batch": batch, "separate": separate}
        for rep in range(reps):
            order = ["batch", "separate"] if rep % 2 == 0 else ["separate", "batch"]
            for name in order:
                row = await run(root, ways[name])
                rows[name].append(row)
                print(
                    f"rep {rep} {name:>8}: {row['wall']:.2f}s, {row['calls']:.0f} request(s), "
                    f"output {row['output']:.0f} tokens charged (total {row['total']:.0f}), "
                    f"prompt tokens evaluated {row['prompt_evaluated']:.0f}, "
                    f"completed {row['completed']:.0f}"
                )
        cache = "on" if prompt_cache else "off"
        print(
            f"\nk={k}, max_tokens={max_tokens}, prompt cache {cache}, {reps} reps: median (min-max)"
        )
        for name in ("batch", "separate"):
            print(
                f"{name:>8}: wall {summary(rows[name], 'wall')} s; output charged "
                f"{summary(rows[name], 'output')}; total charged {summary(rows[name], 'total')}; "
                f"prompt evaluated {summary(rows[name], 'prompt_evaluated')}"
            )
        ratios = [
            b["wall"] / s["wall"] for b, s in zip(rows["batch"], rows["separate"], strict=True)
        ]
        print(
            f"wall time, batch / separate: median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    finally:
        await client.close()
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--no-prompt-cache", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(measure(args.k, args.reps, args.max_tokens, not args.no_prompt_cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
