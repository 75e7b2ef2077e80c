"""The cost-latency frontier of adaptive sampling: launch policy x stop rule.

Simulated questions (60 % easy, 40 % hard; wrong answers spread over a few distractors
of uneven weight, so one dominates, as real models' systematic errors do), N = 16.
Each question's 16 samples (answer, latency) are drawn once, seeded, and replayed to
every recipe, so the comparison is paired. Latency is log-normal around 2 s, played on
a virtual asyncio clock (no real sleeping). Every sample is a real budgeted call
(``@llm_call``, an OpenAI-shaped response whose output tokens grow with its latency)
through the real ``aself_consistency``, so cancelled samples are charged what the
library charges them (an estimate: the call's reservation, its worst case).

Printed per launch policy x stop rule: samples launched (= paid: a cancelled sample is
never free) per question and how many fewer than fixed N = 16; output tokens paid per
question; accuracy change vs fixed N = 16 majority (same samples); mean wall time vs
launching all 16 at once with the same rule, and vs fixed N = 16 all at once.

    python benchmarks/sampling_frontier.py [--questions 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import selectors
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tcc_plugin import budget, llm_call
from tcc_plugin.sampling import (
    LaunchPolicy,
    StopRule,
    aself_consistency,
    current_sample,
    launch_adaptive,
    launch_all,
    launch_sequential,
    launch_waves,
    stop_confident,
    stop_unbeatable,
    whole,
)
from tcc_plugin.sampling.api import DEFAULT_LAUNCH, DEFAULT_STOP

N = 16
TOKENS_PER_SECOND = 150  # output tokens a sample streams per second of its latency
MAX_OUTPUT = 1024  # each call's output cap: its reservation (worst case)


# -- a virtual clock for asyncio: time advances when the loop would sleep ---------------
class _Skip:
    """Wraps the loop's selector: a wait of t seconds advances the clock by t at once."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualClockLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout > 0:
            self._loop.now += timeout
        return self._inner.select(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _Skip(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self.now


# -- simulated questions ----------------------------------------------------------------
@dataclass(frozen=True)
class Question:
    answers: tuple[str, ...]  # what sample i answers
    latencies: tuple[float, ...]  # how long sample i takes (s)
    hard: bool


def simulate(count: int, seed: int) -> list[Question]:
    rng = random.Random(seed)
    out = []
    for q in range(count):
        hard = rng.random() < 0.4
        p = rng.betavariate(2.0, 1.6) if hard else rng.betavariate(14.0, 1.0)
        wrong = [f"w{q}-{k}" for k in range(4)]
        weights = [rng.expovariate(1.0) for _ in wrong]  # one distractor dominates
        answers = tuple(
            "right" if rng.random() < p else rng.choices(wrong, weights)[0] for _ in range(N)
        )
        # log-normal around 2 s (median 2 s, sigma 0.5): a few slow stragglers
        latencies = tuple(2.0 * math.exp(rng.gauss(0.0, 0.5)) for _ in range(N))
        out.append(Question(answers, latencies, hard))
    return out


@llm_call(model="gpt-4o-mini", provider="openai", max_output_tokens=MAX_OUTPUT)
async def _answer(text: str, latency: float) -> dict[str, Any]:
    await asyncio.sleep(latency)
    tokens = min(MAX_OUTPUT, int(latency * TOKENS_PER_SECOND))
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": text}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": tokens, "total_tokens": 100 + tokens},
    }


@dataclass
class Row:
    launched: int = 0
    output_tokens: int = 0
    right: int = 0
    answers: list[str | None] | None = None
    walls: list[float] | None = None


async def _run(questions: list[Question], stop: StopRule | None, launch: LaunchPolicy) -> Row:
    loop = asyncio.get_running_loop()
    row = Row(answers=[], walls=[])
    for question in questions:

        async def sample(q: Question = question) -> dict[str, Any]:
            ctx = current_sample()
            assert ctx is not None
            result: dict[str, Any] = await _answer(q.answers[ctx.index], q.latencies[ctx.index])
            return result

        start = loop.time()
        async with budget(name="question") as b:
            result = await aself_consistency(sample, n=N, stop=stop, launch=launch, extract=whole())
        assert b.reserved.is_zero() and b.in_flight == 0
        row.walls.append(loop.time() - start)  # type: ignore[union-attr]
        row.launched += result.launched
        row.output_tokens += b.spent.output_tokens
        row.right += result.answer == "right"
        row.answers.append(result.answer)  # type: ignore[union-attr]
    return row


def run(questions: list[Question], stop: StopRule | None, launch: LaunchPolicy) -> Row:
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(_run(questions, stop, launch))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="fewer policies and rules")
    parser.add_argument(
        "--defaults-on-seeds",
        metavar="S1,S2,...",
        help="only the defaults (and their baselines), once per seed, with a summary",
    )
    args = parser.parse_args(argv)
    if args.defaults_on_seeds:
        seeds = [int(s) for s in args.defaults_on_seeds.split(",")]
        return defaults_on_seeds(seeds, args.questions)

    def confident(t: float, method: Any) -> Callable[[], StopRule]:
        return lambda: stop_confident(t, method=method) | stop_unbeatable()

    rules: list[tuple[str, Callable[[], StopRule]]] = [
        ("unbeatable", stop_unbeatable),
        ("default", lambda: DEFAULT_STOP),
        ("beta .95|unbeat", confident(0.95, "beta")),
        ("pred .95|unbeat", confident(0.95, "predictive")),
    ]
    policies: list[tuple[str, LaunchPolicy]] = [
        ("all at once", launch_all()),
        ("sequential", launch_sequential()),
        ("waves(2)", launch_waves(2)),
        ("waves(4)", launch_waves(4)),
        ("adaptive(g=0)", launch_adaptive(growth=0.0)),
        ("adaptive(g=.25)", launch_adaptive(growth=0.25)),
        ("adaptive(g=.5)", launch_adaptive(growth=0.5)),
        ("adaptive(g=1)", launch_adaptive(growth=1.0)),
        ("adaptive(g=2)", launch_adaptive(growth=2.0)),
        ("adaptive(g=.5,m4)", launch_adaptive(growth=0.5, min_wave=4)),
        ("adaptive(g=1,m3)", launch_adaptive(growth=1.0, min_wave=3)),
    ]
    if args.quick:
        rules = [rules[0], rules[1]]
        policies = [policies[0], policies[4], policies[5]]
    questions = simulate(args.questions, args.seed)
    print(
        f"{len(questions)} questions ({sum(q.hard for q in questions)} hard), seed "
        f"{args.seed}, N={N}; defaults: stop={DEFAULT_STOP!r}, launch={DEFAULT_LAUNCH!r}"
    )
    t0 = time.perf_counter()
    base = run(questions, None, launch_all())
    assert base.walls is not None
    base_wall = statistics.mean(base.walls)
    before = run(questions, stop_unbeatable(), launch_all())  # the defaults before launch=
    assert before.walls is not None
    before_wall = statistics.mean(before.walls)
    n_q = len(questions)
    print(
        f"fixed N=16 majority, all at once: accuracy {100 * base.right / n_q:.1f}%, "
        f"{base.output_tokens / n_q:.0f} output tokens/q, mean wall {base_wall:.2f}s"
    )
    header = (
        f"{'stop rule':<16} {'launch':<17} {'paid/q':>6} {'fewer':>6} {'tok/q':>6} "
        f"{'tok fewer':>9} {'acc vs N16':>10} {'wall/all':>8} {'wall/old':>8} {'wall/N16':>8}"
    )
    print(header)
    for rule_name, make_rule in rules:
        all_wall: float | None = None
        for policy_name, policy in policies:
            row = run(questions, make_rule(), policy)
            assert row.walls is not None
            wall = statistics.mean(row.walls)
            if all_wall is None:
                all_wall = wall
            print(
                f"{rule_name:<16} {policy_name:<17} {row.launched / n_q:>6.2f} "
                f"{N * n_q / row.launched:>5.2f}x {row.output_tokens / n_q:>6.0f} "
                f"{base.output_tokens / row.output_tokens:>8.2f}x "
                f"{100 * (row.right - base.right) / n_q:>+9.1f}pt "
                f"{wall / all_wall:>7.2f}x {wall / before_wall:>7.2f}x {wall / base_wall:>7.2f}x"
            )
    print(
        "wall/all: vs launching every sample at once with the same rule; wall/old: vs the "
        "defaults before launch policies (stop_unbeatable(), all at once)"
    )
    print(f"({time.perf_counter() - t0:.0f}s of real time)")
    return 0


def defaults_on_seeds(seeds: list[int], count: int) -> int:
    """The defaults on several simulated sets: per seed and min / median / max."""
    print(f"defaults: stop={DEFAULT_STOP!r}, launch={DEFAULT_LAUNCH!r}; {count} questions/seed")
    print(f"{'seed':>4} {'paid/q':>6} {'fewer':>6} {'acc vs N16':>10} {'wall/all':>8} "
          f"{'wall/old':>8} {'wall/N16':>8}")  # fmt: skip
    rows: list[tuple[float, ...]] = []
    for seed in seeds:
        questions = simulate(count, seed)
        base = run(questions, None, launch_all())
        before = run(questions, stop_unbeatable(), launch_all())
        same_all = run(questions, DEFAULT_STOP, launch_all())
        row = run(questions, DEFAULT_STOP, DEFAULT_LAUNCH)
        wall = statistics.mean(row.walls or [])
        figures = (
            row.launched / count,
            N * count / row.launched,
            100 * (row.right - base.right) / count,
            wall / statistics.mean(same_all.walls or []),
            wall / statistics.mean(before.walls or []),
            wall / statistics.mean(base.walls or []),
        )
        rows.append(figures)
        print(f"{seed:>4} {figures[0]:>6.2f} {figures[1]:>5.2f}x {figures[2]:>+9.1f}pt "
              f"{figures[3]:>7.2f}x {figures[4]:>7.2f}x {figures[5]:>7.2f}x")  # fmt: skip
    for label, pick in (("min", min), ("median", statistics.median), ("max", max)):
        f = [pick(column) for column in zip(*rows, strict=True)]
        print(f"{label:>6} {f[0]:>4.2f} {f[1]:>5.2f}x {f[2]:>+9.1f}pt "
              f"{f[3]:>7.2f}x {f[4]:>7.2f}x {f[5]:>7.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
