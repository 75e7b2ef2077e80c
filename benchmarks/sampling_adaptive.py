"""Adaptive early stopping against a fixed N = 16 majority vote, on simulated questions.

Each simulated question has a per-sample accuracy p drawn from a realistic spread, and
a few wrong answers with uneven weights (systematic errors pile up on one distractor,
as real models' do). Every question's 16 samples are drawn once (seeded) and replayed
to every recipe, so the comparison is paired. Each recipe runs through the real
``self_consistency`` engine, one sample at a time (``concurrency=1``, as in
Adaptive-Consistency), and the table reports the samples used and the accuracy against
fixed N = 16 majority voting. Target: >= 3x fewer samples at <= 0.5 point accuracy loss.

Profiles (per-sample accuracy p, mixed from Beta distributions):

- ``frontier``: a frontier model on grade-school maths: 80% of questions easy
  (p ~ Beta(30, 1), mean 0.97), 12% medium (Beta(4, 2), 0.67), 8% hard
  (Beta(1.5, 2.5), 0.38); mean p ~ 0.87.
- ``gsm8k``: a good model on grade-school maths: 60% easy (Beta(12, 1), mean 0.92),
  25% medium, 15% hard; mean p ~ 0.78.
- ``math``: a harder set: 35% easy, 35% medium, 30% hard; mean p ~ 0.67.

    python benchmarks/sampling_adaptive.py [--questions 1000] [--seed 7] [--profile gsm8k]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from tcc_plugin.sampling import (
    StopRule,
    current_sample,
    self_consistency,
    stop_confident,
    stop_unbeatable,
    whole,
)

N = 16
Method = Literal["beta", "dirichlet", "predictive"]
PROFILES: dict[str, list[tuple[float, float, float]]] = {
    # (share of questions, Beta a, Beta b) of the per-sample accuracy
    "frontier": [(0.80, 30.0, 1.0), (0.12, 4.0, 2.0), (0.08, 1.5, 2.5)],
    "gsm8k": [(0.60, 12.0, 1.0), (0.25, 4.0, 2.0), (0.15, 1.5, 2.5)],
    "math": [(0.35, 12.0, 1.0), (0.35, 4.0, 2.0), (0.30, 1.5, 2.5)],
}


@dataclass(frozen=True)
class Question:
    truth: str
    samples: tuple[str, ...]  # what sample i answers
    p: float


def simulate(count: int, seed: int, profile: str) -> list[Question]:
    rng = random.Random(seed)
    mix = PROFILES[profile]
    questions = []
    for q in range(count):
        pick, acc = rng.random(), 0.0
        a, b = mix[-1][1:]
        for share, a_, b_ in mix:
            acc += share
            if pick <= acc:
                a, b = a_, b_
                break
        p = rng.betavariate(a, b)
        wrong = [f"w{q}-{k}" for k in range(4)]
        weights = [rng.expovariate(1.0) for _ in wrong]  # uneven: one distractor dominates
        samples = tuple(
            "right" if rng.random() < p else rng.choices(wrong, weights)[0] for _ in range(N)
        )
        questions.append(Question("right", samples, p))
    return questions


def run(questions: list[Question], stop: StopRule | None) -> tuple[int, int]:
    """Samples used and questions answered right, through the real engine."""
    used = right = 0
    for question in questions:
        answers = question.samples

        def sample(answers: tuple[str, ...] = answers) -> str:
            ctx = current_sample()
            assert ctx is not None
            return answers[ctx.index]

        result = self_consistency(sample, n=N, concurrency=1, stop=stop, extract=whole())
        used += result.launched
        right += result.answer == question.truth
    return used, right


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None, help="default: all")
    args = parser.parse_args(argv)

    def confident(threshold: float, method: Method) -> Callable[[], StopRule]:
        return lambda: stop_confident(threshold, method=method) | stop_unbeatable()

    recipes: list[tuple[str, Callable[[], StopRule | None]]] = [
        ("fixed N=16 majority", lambda: None),
        ("stop_unbeatable (lossless)", stop_unbeatable),
        ("beta 0.95 (Adaptive-Consistency)", confident(0.95, "beta")),
        ("dirichlet 0.95", confident(0.95, "dirichlet")),
        ("predictive 0.95", confident(0.95, "predictive")),
        ("predictive 0.9", confident(0.9, "predictive")),
    ]
    for profile in [args.profile] if args.profile else list(PROFILES):
        questions = simulate(args.questions, args.seed, profile)
        mean_p = sum(q.p for q in questions) / len(questions)
        print(
            f"\nprofile {profile}: {len(questions)} questions, seed {args.seed}, "
            f"mean per-sample accuracy {mean_p:.3f}"
        )
        print(
            f"{'recipe':<34} {'samples':>8} {'per q':>6} {'fewer':>6} {'accuracy':>9} "
            f"{'vs fixed':>9}"
        )
        base_used = base_right = 0
        for label, make in recipes:
            start = time.perf_counter()
            used, right = run(questions, make())
            seconds = time.perf_counter() - start
            if label.startswith("fixed"):
                base_used, base_right = used, right
            accuracy = 100 * right / len(questions)
            delta = 100 * (right - base_right) / len(questions)
            print(
                f"{label:<34} {used:>8} {used / len(questions):>6.2f} "
                f"{base_used / used:>5.2f}x {accuracy:>8.1f}% {delta:>+8.1f}pt  ({seconds:.1f}s)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
