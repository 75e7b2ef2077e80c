"""The sampling frontier on the embedded engine: real samples of a real small model.

The simulated frontier (benchmarks/sampling_frontier.py) on real calls: built-in
arithmetic word problems (levels 1-5) asked of Qwen2.5-Coder-0.5B on llama-server
through an instrumented ``openai.AsyncOpenAI`` client, ``aself_consistency`` with N
samples per question (temperature 0.8). For each recipe it prints samples paid per
question and how many fewer than the fixed N vote, output tokens charged, accuracy
against the right answer and against the fixed vote's, and the real wall time per
question against launching every sample at once.

Each recipe draws its own samples (real calls, not a replay), so with few questions
the accuracy columns are noisy: read them with the simulated benchmark's. Runs on
demand (it starts the engine; the first run on a machine builds it), never in CI.

    python benchmarks/sampling_frontier_engine.py [--questions 10] [--n 8] [--max-level 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from tcc_plugin import budget
from tcc_plugin.app.local_engine import QWEN25_CODER_05B, LocalEngine
from tcc_plugin.sampling import (
    LaunchPolicy,
    StopRule,
    aself_consistency,
    launch_all,
    stop_unbeatable,
)
from tcc_plugin.sampling.api import DEFAULT_LAUNCH, DEFAULT_STOP
from tcc_plugin.sweep import arithmetic


def reply_text(response: Any) -> str:
    """The reply's text; the thought when the message is empty (llama-server with
    ``--reasoning-format deepseek`` files a small model's whole answer as its thought
    when it never closes one)."""
    message = response.choices[0].message
    return message.content or getattr(message, "reasoning_content", None) or ""


@dataclass
class Outcome:
    paid: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)


async def run_recipe(
    client: Any,
    model: str,
    questions: list[tuple[str, str]],
    n: int,
    stop: StopRule | None,
    launch: LaunchPolicy,
    max_tokens: int,
) -> Outcome:
    out = Outcome()
    for text, _ in questions:

        async def ask(text: str = text) -> str:
            response = await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": text}],
                max_tokens=max_tokens,
                temperature=0.8,
            )
            return reply_text(response)

        t0 = time.perf_counter()
        async with budget(name="question") as b:
            result = await aself_consistency(ask, n=n, stop=stop, launch=launch)
        out.walls.append(time.perf_counter() - t0)
        assert b.reserved.is_zero() and b.in_flight == 0
        out.paid.append(result.launched)
        out.tokens.append(b.spent.output_tokens)
        out.answers.append(result.answer)
    return out


async def measure(count: int, n: int, parallel: int, max_tokens: int, max_level: int) -> None:
    evalset = arithmetic(per_level=count)
    questions = [
        (q.question, str(q.answer)) for q in evalset.questions if q.meta["level"] <= max_level
    ]
    questions = questions[::max_level][:count]  # every max_level-th: each level in turn
    recipes: list[tuple[str, StopRule | None, LaunchPolicy]] = [
        (f"fixed N={n}", None, launch_all()),
        ("unbeatable, all at once (old default)", stop_unbeatable(), launch_all()),
        ("default rule, all at once", DEFAULT_STOP, launch_all()),
        ("defaults (rule + adaptive launch)", DEFAULT_STOP, DEFAULT_LAUNCH),
    ]
    engine = LocalEngine(QWEN25_CODER_05B, parallel=parallel, progress=False)
    engine.start()
    try:
        client = engine.async_client()
        await client.chat.completions.create(  # warm up
            model=engine.alias, messages=[{"role": "user", "content": "1+1?"}], max_tokens=8
        )
        results = []
        for name, stop, launch in recipes:
            outcome = await run_recipe(client, engine.alias, questions, n, stop, launch, max_tokens)
            results.append((name, outcome))
            print(f"  ran {name}: {sum(outcome.walls):.0f}s", flush=True)
    finally:
        engine.stop()
    fixed = results[0][1]
    all_at_once = results[2][1]
    q = len(questions)
    print(
        f"{q} arithmetic questions, N={n}, {parallel} server slots, max_tokens {max_tokens}; "
        f"fixed N={n}: {sum(fixed.paid) / q:.2f} samples/q, "
        f"{statistics.mean(fixed.walls):.1f}s/q"
    )
    print(
        f"{'recipe':<38} {'paid/q':>6} {'fewer':>6} {'tok/q':>6} {'right':>5} "
        f"{'=fixed':>6} {'wall/q':>6} {'vs all':>6} {'vs N':>5}"
    )
    for name, o in results:
        right = sum(a == truth for a, (_, truth) in zip(o.answers, questions, strict=True))
        agree = sum(a == f for a, f in zip(o.answers, fixed.answers, strict=True))
        wall = statistics.mean(o.walls)
        print(
            f"{name:<38} {sum(o.paid) / q:>6.2f} {sum(fixed.paid) / sum(o.paid):>5.2f}x "
            f"{sum(o.tokens) / q:>6.0f} {right:>2}/{q:<2} {agree:>3}/{q:<2} {wall:>5.1f}s "
            f"{wall / statistics.mean(all_at_once.walls):>5.2f}x "
            f"{wall / statistics.mean(fixed.walls):>4.2f}x"
        )
    print("right: the true answer; =fixed: the fixed vote's answer (its own draws)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--max-level", type=int, default=2, help="hardest arithmetic level asked (1-5)"
    )
    args = parser.parse_args(argv)
    asyncio.run(measure(args.questions, args.n, args.parallel, args.max_tokens, args.max_level))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
