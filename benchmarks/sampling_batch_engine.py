"""The batch path on the embedded engine: k samples of one prompt as one request with
``n=k``, against k separate concurrent requests (llama-server, Qwen2.5-Coder-0.5B).

Prints, per repetition, the wall time of each and what the server says about prompt
processing (``timings.prompt_n``: prompt tokens actually evaluated) and usage. Runs on
demand (it starts the engine; the first run on a machine builds it), never in CI.

    python benchmarks/sampling_batch_engine.py [--k 4] [--reps 3] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

from tcc_plugin.app.local_engine import QWEN25_CODER_05B, LocalEngine

PROMPT = [
    {
        "role": "user",
        "content": "A farmer has 17 sheep; all but 9 run away. How many are left? "
        "Think step by step, then write 'Answer: N'.",
    }
]


async def measure(k: int, reps: int, max_tokens: int) -> None:
    engine = LocalEngine(QWEN25_CODER_05B, parallel=k, ctx_size=512 * k, progress=False)
    engine.start()
    try:
        url = f"{engine.base_url}/v1/chat/completions"
        body: dict[str, Any] = {
            "model": engine.alias,
            "messages": PROMPT,
            "max_tokens": max_tokens,
            "temperature": 0.8,
        }
        ratios = []
        async with httpx.AsyncClient(timeout=600) as http:
            await http.post(url, json=body)  # warm up (and fill the prompt cache once)
            for rep in range(reps):
                t0 = time.perf_counter()
                batch = (await http.post(url, json={**body, "n": k})).json()
                t_batch = time.perf_counter() - t0
                t0 = time.perf_counter()
                singles = [
                    r.json()
                    for r in await asyncio.gather(*(http.post(url, json=body) for _ in range(k)))
                ]
                t_sep = time.perf_counter() - t0
                ratios.append(t_batch / t_sep)
                print(
                    f"rep {rep}: n={k} in one request {t_batch:.2f}s "
                    f"({len(batch.get('choices', []))} choices, usage {batch.get('usage')}, "
                    f"prompt_n {batch.get('timings', {}).get('prompt_n')}); "
                    f"{k} requests {t_sep:.2f}s (prompt_n "
                    f"{[s.get('timings', {}).get('prompt_n') for s in singles]}, completion "
                    f"tokens {sum(s['usage']['completion_tokens'] for s in singles)})"
                )
        print(
            f"wall time, one n={k} request / {k} requests: median "
            f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    finally:
        engine.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    asyncio.run(measure(args.k, args.reps, args.max_tokens))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
