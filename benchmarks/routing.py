"""Routing by difficulty: the accuracy-cost frontier of routers and cascades, simulated.

Each question has a hidden difficulty d in [0, 1] (60 % easy, d uniform in [0, 0.3]; 40 %
hard, d uniform in [0.4, 1]) and a text whose structure (how many quantities and steps
it chains) follows d, with noise. Two ways to answer:

- **cheap**: one call, cost 1; right with probability 0.98 - 0.9 d^2; a wrong answer
  is the question's dominant distractor 60 % of the time, else one of four others;
- **think**: a reasoning call, cost 10; right with probability 0.95 - 0.12 d, so it is
  slightly *worse* than cheap on the easiest questions (overthinking).

Compared, on a test split of questions never seen in training (the routers run through
``tcc_plugin.routing``: the real Router, estimators, cascade and acceptance rule):

- always-cheap and always-think;
- the heuristic router (``heuristic_difficulty``), each threshold;
- the learned router (``LearnedDifficulty`` trained on a separate split's simulated sweep
  rows: cheap answered right or wrong, two seeds), each threshold;
- the vote-agreement cascade: k cheap samples voted (``self_consistency``), accepted when
  ``accept_agreement(share)``, else escalated to think; each k and share;
- the oracle router, which knows d and sends a question to think when think's accuracy
  there beats cheap's by more than a margin (each margin): the ceiling.

For each method it prints the cheapest operating point whose accuracy is within 0.5 pt of
always-think, its cost as a share of always-think's, and its cost against the oracle's at
that accuracy. Then the routing overhead per decision (heuristic estimator, no
self-assessment call), without and with the OpenTelemetry SDK, against calling the route
directly.

    python benchmarks/routing.py [--questions 3000] [--seed 7] [--frontier]

On demand, on the embedded local engine (thinking off vs budget-forced thinking, on the
built-in set; a few minutes per question on 2 cores):

    tcc sweep --builtin arithmetic --methods single,forcing --budgets 64,512 \
        --results engine.jsonl
    python benchmarks/routing.py --from-sweep engine.jsonl --cheap single-b64 \
        --think forcing-b512
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tcc_plugin.routing import (
    LearnedDifficulty,
    Route,
    Router,
    accept_agreement,
    cascade,
    heuristic_difficulty,
)
from tcc_plugin.sampling import self_consistency, stop_never

CHEAP_COST, THINK_COST = 1.0, 10.0
WORDS = ["apples", "crates", "trains", "tickets", "litres", "pages", "coins", "workers"]


RIGHT = "100"  # answers are numbers, as the sampling extractors expect


def p_cheap(d: float) -> float:
    return max(0.0, 0.98 - 0.9 * d**2)


def p_think(d: float) -> float:
    return 0.95 - 0.12 * d


@dataclass
class Question:
    qid: str
    text: str
    difficulty: float
    cheap_draws: list[str]  # answers of successive cheap samples
    think_answer: str


def make_question(i: int, rng: random.Random) -> Question:
    # 60 % easy, 40 % hard, as in the sampling benchmarks (issue 15's question mix)
    d = rng.uniform(0.0, 0.3) if rng.random() < 0.6 else rng.uniform(0.4, 1.0)
    steps = max(1, round(1 + 7 * d + rng.gauss(0, 1.2)))
    parts = [f"A depot holds {rng.randint(10, 999)} {rng.choice(WORDS)}."]
    for _ in range(steps - 1):
        verb = rng.choice(["Then it ships", "After that it receives", "Each day it loses"])
        parts.append(f"{verb} {rng.randint(2, 99)} {rng.choice(WORDS)}.")
    parts.append("How many remain?" if d < 0.5 else "How many remain, in total, at the end?")

    def wrong() -> str:  # the dominant distractor 101, else one of 102..105
        return "101" if rng.random() < 0.6 else str(rng.randint(102, 105))

    cheap = [RIGHT if rng.random() < p_cheap(d) else wrong() for _ in range(8)]
    think = RIGHT if rng.random() < p_think(d) else wrong()
    return Question(f"q{i}", " ".join(parts), d, cheap, think)


@dataclass(frozen=True)
class Point:
    method: str
    setting: str
    accuracy: float
    cost: float


def evaluate(method: str, setting: str, answer: Callable[[Question], tuple[str, float]],
             questions: Sequence[Question]) -> Point:  # fmt: skip
    right = total = 0.0
    for q in questions:
        got, cost = answer(q)
        right += got == RIGHT
        total += cost
    return Point(method, setting, right / len(questions), total / len(questions))


def router_points(name: str, estimator: Any, thresholds: Sequence[float],
                  questions: Sequence[Question]) -> list[Point]:  # fmt: skip
    points = []
    for t in thresholds:
        router = Router(
            [
                Route("cheap", lambda q: (q.cheap_draws[0], CHEAP_COST), up_to=t),
                Route("think", lambda q: (q.think_answer, THINK_COST)),
            ],
            lambda q: estimator.estimate(q.text),
        )
        points.append(evaluate(name, f"up_to={t:.2f}", router, questions))
    return points


def cascade_points(questions: Sequence[Question]) -> list[Point]:
    points = []
    for k in (2, 3, 4):
        for share in (0.6, 0.7, 0.75, 0.8, 1.0):

            def cheap_vote(q: Question, k: int = k) -> Any:
                draws = iter(q.cheap_draws)
                return self_consistency(lambda: next(draws), n=k, concurrency=1, stop=stop_never())

            flow = cascade(
                [Route("cheap", cheap_vote), Route("think", lambda q: q.think_answer)],
                accept_agreement(share),
            )

            def answer(q: Question, flow: Any = flow, k: int = k) -> tuple[str, float]:
                result = flow.run(q)
                if result.route == "cheap":
                    return result.answer.answer, k * CHEAP_COST
                return result.answer, k * CHEAP_COST + THINK_COST

            points.append(evaluate("cascade", f"k={k} share>={share}", answer, questions))
    return points


def oracle_points(questions: Sequence[Question]) -> list[Point]:
    points = []
    for margin in [m / 100 for m in range(-10, 60, 2)]:

        def answer(q: Question, margin: float = margin) -> tuple[str, float]:
            if p_think(q.difficulty) - p_cheap(q.difficulty) > margin:
                return q.think_answer, THINK_COST
            return q.cheap_draws[0], CHEAP_COST

        points.append(evaluate("oracle", f"margin={margin:+.2f}", answer, questions))
    return points


def cheapest_at(points: Sequence[Point], accuracy: float) -> Point | None:
    ok = [p for p in points if p.accuracy >= accuracy - 1e-12]
    return min(ok, key=lambda p: p.cost) if ok else None


def oracle_cost_at(oracle: Sequence[Point], accuracy: float) -> float | None:
    best = cheapest_at(oracle, accuracy)
    return None if best is None else best.cost


def overhead(repeats: int) -> tuple[float, float, float, float]:
    """Median µs per decision: a direct route call; what a Router adds without an SDK and
    with it; and, for scale, one empty span of the same SDK (the floor of any traced
    decision), all measured in this run."""
    estimator = heuristic_difficulty()
    text = "A depot holds 120 crates. Then it ships 14 crates. How many remain?"
    direct_route = Route("cheap", lambda q: q, up_to=0.5)
    router = Router([direct_route, Route("think", lambda q: q)], estimator)

    def timed(fn: Callable[[], Any], n: int = 2000) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    bare = [timed(lambda: direct_route.call(text)) for _ in range(repeats)]
    no_sdk = [timed(lambda: router.run(text)) for _ in range(repeats)]
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    with_sdk = [timed(lambda: router.run(text)) for _ in range(repeats)]
    tracer = trace.get_tracer("floor")

    def empty_span() -> None:
        with tracer.start_as_current_span("floor"):
            pass

    floor = [timed(empty_span) for _ in range(repeats)]
    b = statistics.median(bare)
    return (
        b,
        statistics.median(no_sdk) - b,
        statistics.median(with_sdk) - b,
        statistics.median(floor),
    )


def simulate(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    train = [make_question(i, rng) for i in range(args.questions)]
    test = [make_question(i, rng) for i in range(args.questions)]
    rows = [
        {"cell_id": "cheap", "question_id": q.qid, "seed": s, "question": q.text,
         "correct": q.cheap_draws[s] == RIGHT, "error": None}
        for q in train for s in range(2)
    ]  # fmt: skip
    learned = LearnedDifficulty.from_sweep(rows, cheap_cell="cheap")
    thresholds = [t / 100 for t in range(0, 101, 2)]

    cheap = evaluate("always-cheap", "-", lambda q: (q.cheap_draws[0], CHEAP_COST), test)
    think = evaluate("always-think", "-", lambda q: (q.think_answer, THINK_COST), test)
    oracle = oracle_points(test)
    methods = {
        "heuristic router": router_points("heuristic", heuristic_difficulty(), thresholds, test),
        "learned router": router_points("learned", learned, thresholds, test),
        "vote cascade": cascade_points(test),
        "oracle router": oracle,
    }
    target = think.accuracy - 0.005
    # The routers' thresholds chosen honestly: on the training split, then run on the test.
    train_think = evaluate("always-think", "-", lambda q: (q.think_answer, THINK_COST), train)
    picked: dict[str, Point] = {}
    for name, estimator in (("heuristic", heuristic_difficulty()), ("learned", learned)):
        on_train = cheapest_at(
            router_points(name, estimator, thresholds, train), train_think.accuracy
        )
        if on_train is not None:
            bound = float(on_train.setting.split("=")[1])
            picked[name] = router_points(name, estimator, [bound], test)[0]
    print(f"{len(test)} test questions (trained on {len(train)}); seed {args.seed}")
    print(f"always-cheap: accuracy {cheap.accuracy:.1%}, cost {cheap.cost:.2f}")
    print(f"always-think: accuracy {think.accuracy:.1%}, cost {think.cost:.2f}")
    print(f"\ncheapest point within 0.5 pt of always-think (>= {target:.1%}):")
    header = ("method", "setting", "accuracy", "cost", "vs think", "vs oracle")
    print("{:<18} {:<22} {:>9} {:>6} {:>9} {:>10}".format(*header))
    for name, points in methods.items():
        best = cheapest_at(points, target)
        if best is None:
            top = max(points, key=lambda p: p.accuracy)
            print(f"{name:<18} never reaches it (best {top.accuracy:.1%} at cost {top.cost:.2f})")
            continue
        ocost = oracle_cost_at(oracle, best.accuracy)
        vs_oracle = f"{best.cost / ocost:.2f}x" if ocost else "n/a"
        print(
            f"{name:<18} {best.setting:<22} {best.accuracy:>8.1%} {best.cost:>6.2f} "
            f"{best.cost / think.cost:>8.0%} {vs_oracle:>10}"
        )
    print("\nthreshold chosen on the training split (reaching always-think accuracy there):")
    for name, point in picked.items():
        ocost = oracle_cost_at(oracle, point.accuracy)
        vs_oracle = f"{point.cost / ocost:.2f}x" if ocost else "n/a"
        print(
            f"{name + ' router':<18} {point.setting:<22} {point.accuracy:>8.1%} "
            f"{point.cost:>6.2f} {point.cost / think.cost:>8.0%} {vs_oracle:>10}"
        )
    if args.frontier:
        for name, points in methods.items():
            print(f"\n{name} frontier (accuracy, cost):")
            frontier = sorted(points, key=lambda p: p.cost)
            best_acc = -1.0
            for p in frontier:
                if p.accuracy > best_acc:
                    best_acc = p.accuracy
                    print(f"  {p.setting:<22} {p.accuracy:.1%}  {p.cost:.2f}")
    bare, no_sdk, with_sdk, floor = overhead(args.repeats)
    print(
        f"\nrouting overhead per decision (heuristic estimator, median of {args.repeats}"
        f" x 2000): {no_sdk:.1f} us without an OTel SDK, {with_sdk:.1f} us with it;"
        f" for scale, one empty SDK span costs {floor:.1f} us here and a direct route"
        f" call {bare:.2f} us"
    )
    return 0


def from_sweep(args: argparse.Namespace) -> int:
    """Routers over real outcomes: a ``tcc sweep`` results file (e.g. on the embedded
    engine) holds, per question, whether the cheap cell and the thinking cell answered
    it and what each cost; each router is replayed on them (the learned one with 2-fold
    cross-validation: trained on one half, scored on the other)."""
    import json

    with open(args.from_sweep, encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    rows = [r for r in rows if not r.get("error") and not r.get("refused")]
    per: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in rows:
        per.setdefault(row["question_id"], {}).setdefault(row["cell_id"], []).append(row)
    cells = {c for q in per.values() for c in q}
    for cell in (args.cheap, args.think):
        if cell not in cells:
            print(f"no rows of cell {cell!r}; the file has {sorted(cells)}", file=sys.stderr)
            return 2
    both = {q: c for q, c in per.items() if args.cheap in c and args.think in c}
    if len(both) < 4:
        print(f"{len(both)} questions answered by both cells: too few", file=sys.stderr)
        return 2

    def outcome(rs: list[dict[str, Any]]) -> tuple[bool, float]:
        right = sum(bool(r["correct"]) for r in rs) * 2 > len(rs)
        cost = statistics.fmean(float(r.get("cost_usd") or 0.0) for r in rs)
        return right, cost

    table = {
        q: (c[args.cheap][0]["question"], outcome(c[args.cheap]), outcome(c[args.think]))
        for q, c in sorted(both.items())
    }

    def score(pick: Callable[[str, str], bool], ids: Sequence[str]) -> Point:
        right = cost = 0.0
        for q in ids:
            text, cheap, think = table[q]
            chosen = think if pick(q, text) else cheap
            right += chosen[0]
            cost += chosen[1]
        return Point("", "", right / len(ids), cost / len(ids))

    ids = list(table)
    think_all = score(lambda q, t: True, ids)
    print(f"{len(ids)} questions, cheap = {args.cheap}, think = {args.think}")
    print(f"always-cheap: {score(lambda q, t: False, ids).accuracy:.1%}, "
          f"${score(lambda q, t: False, ids).cost:.5f} per question")  # fmt: skip
    print(f"always-think: {think_all.accuracy:.1%}, ${think_all.cost:.5f} per question")
    heuristic = heuristic_difficulty()
    thresholds = [t / 20 for t in range(21)]
    methods: dict[str, list[Point]] = {
        "heuristic router": [
            score(lambda q, text, t=t: heuristic.estimate(text) > t, ids) for t in thresholds
        ],
        "oracle router": [score(lambda q, t: not table[q][1][0] and table[q][2][0], ids)],
    }
    half = len(ids) // 2
    folds = (ids[:half], ids[half:])
    learned_points: list[Point] = []
    try:
        models = []
        for train in (folds[1], folds[0]):
            labels = [not table[q][1][0] for q in train]
            models.append(LearnedDifficulty.fit([table[q][0] for q in train], labels, buckets=256))
        for t in thresholds:
            right = cost = 0.0
            for model, test in zip(models, folds, strict=True):
                point = score(lambda q, text, m=model, t=t: m.estimate(text) > t, test)
                right += point.accuracy * len(test)
                cost += point.cost * len(test)
            learned_points.append(Point("", "", right / len(ids), cost / len(ids)))
        methods["learned router (2-fold)"] = learned_points
    except ValueError as exc:
        print(f"learned router skipped: {exc}")
    target = think_all.accuracy - 0.005
    for name, points in methods.items():
        best = cheapest_at(points, target)
        if best is None:
            top = max(points, key=lambda p: p.accuracy)
            print(f"{name:<24} never within 0.5 pt (best {top.accuracy:.1%}, ${top.cost:.5f})")
        else:
            print(f"{name:<24} {best.accuracy:.1%} at ${best.cost:.5f} "
                  f"({best.cost / think_all.cost:.0%} of always-think)")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--frontier", action="store_true", help="print every frontier point")
    parser.add_argument(
        "--from-sweep",
        metavar="RESULTS",
        help="replay the routers on a tcc sweep results file (real outcomes, e.g. the "
        "embedded engine) instead of the simulation",
    )
    parser.add_argument("--cheap", default="single-b64", help="the sweep cell of the cheap route")
    parser.add_argument("--think", default="forcing-b512", help="the sweep cell of thinking")
    args = parser.parse_args(argv)
    return from_sweep(args) if args.from_sweep else simulate(args)


if __name__ == "__main__":
    sys.exit(main())
