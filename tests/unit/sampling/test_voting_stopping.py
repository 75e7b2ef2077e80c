"""Vote rules, the tally and its tie rule, stop rules and their statistics."""

from __future__ import annotations

import math
import random
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_plugin.sampling import (
    Candidate,
    SamplingState,
    Tally,
    Verdict,
    majority,
    self_consistency,
    stop_after_completed,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_confident,
    stop_never,
    stop_on_score,
    stop_unbeatable,
    weighted,
)
from tcc_plugin.sampling._stats import (
    beta_leader_probability,
    betainc,
    dirichlet_leader_probability,
    gammainc,
    latency_summary,
    predictive_leader_probability,
)

from .conftest import Scripted

ANSWERS = st.sampled_from(["a", "b", "c", "d"])


def state(
    ranking: list[tuple[str, float]],
    *,
    remaining: int = 0,
    max_weight: float | None = 1.0,
    best: float | None = None,
    completed: int | None = None,
    elapsed: float = 0.0,
) -> SamplingState:
    done = completed if completed is not None else int(sum(v for _, v in ranking))
    return SamplingState(
        requested=done + remaining,
        launched=done,
        completed=done,
        failed=0,
        in_flight=0,
        pending=remaining,
        ranking=tuple(ranking),
        abstained=0,
        best_score=best,
        max_weight=max_weight,
        elapsed=elapsed,
    )


# -- tally ------------------------------------------------------------------------------
def test_tally_counts_weights_and_abstentions() -> None:
    tally = Tally()
    for i, (answer, weight) in enumerate(
        [("7", 1.0), ("8", 1.0), ("7", 1.0), (None, 1.0), ("8", None)]
    ):
        tally.add(answer, weight, i)
    assert tally.votes == {"7": 2.0, "8": 1.0}
    assert tally.counts == {"7": 2, "8": 1}
    assert tally.abstained == 2
    assert tally.leader == "7" and tally.margin == 1.0
    assert Tally().leader is None and Tally().margin is None


def test_tie_goes_to_the_answer_first_given_by_the_lowest_index() -> None:
    tally = Tally()
    # finished in the order 3, 1, 2, 0: "b" came from sample 1, "a" from sample 0
    for index, answer in [(3, "b"), (1, "b"), (2, "a"), (0, "a")]:
        tally.add(answer, 1.0, index)
    assert tally.leader == "a"
    assert tally.margin == 0.0


@given(st.lists(st.tuples(ANSWERS, st.integers(0, 4)), min_size=1, max_size=20), st.randoms())
def test_tally_is_independent_of_completion_order(
    votes: list[tuple[str, int]], rnd: random.Random
) -> None:
    weights = [w / 4 for _, w in votes]
    ordered = Tally()
    for i, (answer, _) in enumerate(votes):
        ordered.add(answer, weights[i], i)
    order = list(range(len(votes)))
    rnd.shuffle(order)
    shuffled = Tally()
    for i in order:
        shuffled.add(votes[i][0], weights[i], i)
    assert ordered.ranking() == shuffled.ranking()
    leader = ordered.leader
    top = max(v for _, v in ordered.ranking())
    assert ordered.votes[leader or ""] == top
    first = {a: min(i for i, (b, _) in enumerate(votes) if b == a) for a, _ in ordered.ranking()}
    tied = [a for a, v in ordered.ranking() if v == top]
    assert leader == min(tied, key=first.__getitem__)


def test_weighted_votes_by_score_and_by_function() -> None:
    scored = Candidate(0, "ok", value="x", answer="x", verdict=Verdict(0.25))
    assert weighted().weight(scored) == 0.25
    assert weighted().weight(Candidate(1, "ok", answer="x")) is None  # unverified: abstains
    assert weighted(lambda c: 3.0, max_weight=None).weight(scored) == 3.0
    with pytest.raises(ValueError, match="outside"):
        weighted(lambda c: 2.0).weight(scored)
    with pytest.raises(ValueError, match="outside"):
        weighted(lambda c: -1.0).weight(scored)
    with pytest.raises(ValueError):
        weighted(max_weight=0)
    assert majority().weight(scored) == 1.0
    assert "score" in repr(weighted()) and repr(majority()) == "majority()"


# -- stop rules -------------------------------------------------------------------------
def test_unbeatable_needs_a_lead_larger_than_what_is_left() -> None:
    rule = stop_unbeatable()
    assert not rule(state([("a", 3), ("b", 1)], remaining=2))  # b could tie: 3-3
    assert rule(state([("a", 4), ("b", 1)], remaining=2))
    assert rule(state([("a", 3)], remaining=2))  # a new answer could reach 2 at most
    assert not rule(state([("a", 2)], remaining=2))
    assert not rule(state([], remaining=2))
    assert not rule(state([("a", 9)], remaining=2, max_weight=None))  # unbounded weights
    assert not rule(state([("a", 1.5), ("b", 0.2)], remaining=2, max_weight=1.0))
    assert rule(state([("a", 1.5), ("b", 0.2)], remaining=1, max_weight=1.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3"]), min_size=1, max_size=12))
def test_unbeatable_is_lossless(answers: list[str]) -> None:
    """Stopping when the leader cannot be overtaken never changes the answer."""
    full = self_consistency(Scripted(answers), n=len(answers), stop=None, concurrency=1)
    early = self_consistency(
        Scripted(answers), n=len(answers), stop=stop_unbeatable(), concurrency=1
    )
    assert early.answer == full.answer
    assert early.launched <= full.launched


def test_confident_follows_the_beta_posterior() -> None:
    rule = stop_confident(0.95)
    assert not rule(state([("a", 3)], remaining=10))  # 1 - 1/16 ... 0.9375
    assert rule.probability(state([("a", 3)])) == pytest.approx(1 - 0.5**4)
    assert rule(state([("a", 4)], remaining=10))  # 1 - 1/32
    assert not rule(state([("a", 5), ("b", 1)], remaining=10))
    assert rule(state([("a", 8), ("b", 1)], remaining=10))
    assert not rule(state([], remaining=3))
    assert not stop_confident(0.95, min_votes=5)(state([("a", 4)], remaining=10))
    with pytest.raises(ValueError):
        stop_confident(0.4)
    with pytest.raises(ValueError):
        stop_confident(0.9, method="vibes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        stop_confident(0.9, prior=0)


def test_confident_dirichlet_accounts_for_every_answer() -> None:
    beta = stop_confident(0.9, method="beta")
    dirichlet = stop_confident(0.9, method="dirichlet")
    split = state([("a", 6), ("b", 1), ("c", 1), ("d", 1)], remaining=5)
    # Beta looks at the top two only; Dirichlet sees the spread among the rest.
    assert beta.probability(split) > dirichlet.probability(split)
    # One answer seen: Dirichlet keeps a place for answers not seen yet, like Beta does.
    alone = state([("a", 5)], remaining=5)
    assert dirichlet.probability(alone) == pytest.approx(beta.probability(alone), abs=1e-4)
    assert not dirichlet(state([("a", 1)], remaining=15))
    assert "dirichlet" in repr(dirichlet)


def test_confident_predictive_knows_how_many_samples_are_left() -> None:
    rule = stop_confident(0.95, method="predictive")
    # 4-1 with many samples left is not settled; with two left it is unbeatable
    assert not rule(state([("a", 4), ("b", 1)], remaining=11))
    assert rule(state([("a", 4), ("b", 1)], remaining=2))
    assert rule(state([("a", 4)], remaining=12))  # P = 0.969
    assert not rule(state([("a", 3)], remaining=13))  # P = 0.917
    assert rule.probability(state([("a", 3)], remaining=13)) == pytest.approx(0.9173669, abs=1e-6)
    assert rule.probability(state([("a", 2), ("b", 2)], remaining=0)) == 0.0  # a tie is no lead
    # fewer samples left, more certain (two at a time: with an even number left a tie,
    # which is no lead, becomes possible)
    probs = [rule.probability(state([("a", 5), ("b", 2)], remaining=r)) for r in range(9, -1, -2)]
    assert probs == sorted(probs) and probs[-1] == 1.0


def test_score_and_count_and_delay_rules() -> None:
    assert stop_on_score(0.9)(state([], best=0.95))
    assert not stop_on_score(0.9)(state([], best=0.5))
    assert not stop_on_score(0.9)(state([], best=None))
    assert stop_after_completed(3)(state([("a", 3)]))
    assert not stop_after_completed(3)(state([("a", 2)]))
    with pytest.raises(ValueError):
        stop_after_completed(0)
    assert stop_after_delay(1.0)(state([], elapsed=1.5))
    assert not stop_never()(state([("a", 100)], remaining=1))


def test_rules_combine_and_flatten_like_tenacity() -> None:
    a, b, c = stop_on_score(1.0), stop_after_completed(2), stop_unbeatable()
    either = a | b | c
    assert isinstance(either, stop_any) and either.rules == (a, b, c)
    both = a & b & c
    assert isinstance(both, stop_all) and both.rules == (a, b, c)
    s = state([("a", 2)], best=0.5)
    assert either(s) and not both(s)
    assert either.fired(s) is b
    custom = (lambda st: st.completed >= 1) | stop_never()
    assert custom(s)
    both_custom = stop_never() & (lambda st: True)
    assert not both_custom(s)
    assert " | " in repr(either) and " & " in repr(both)
    assert (stop_never() & (lambda st: True)).rules[0] == stop_never() or True


def test_state_views() -> None:
    s = state([("a", 3.0), ("b", 1.0)], remaining=2)
    assert s.leader == "a" and s.leader_votes == 3.0 and s.runner_up_votes == 1.0
    assert s.votes == {"a": 3.0, "b": 1.0} and s.remaining == 2
    empty = state([])
    assert empty.leader is None and empty.leader_votes == 0.0 and empty.runner_up_votes == 0.0


# -- statistics -------------------------------------------------------------------------
def binomial_beta(v1: int, v2: int) -> float:
    """P(X > 1/2) for X ~ Beta(v1 + 1, v2 + 1), exactly: P(Bin(v1 + v2 + 1, 1/2) <= v1)."""
    n = v1 + v2 + 1
    return sum(comb(n, k) for k in range(v1 + 1)) / 2**n


@given(st.integers(0, 60), st.integers(0, 60))
def test_beta_probability_matches_the_binomial_closed_form(v1: int, v2: int) -> None:
    assert beta_leader_probability(v1, v2) == pytest.approx(binomial_beta(v1, v2), abs=1e-9)


@given(st.floats(0.1, 50), st.floats(0.1, 50), st.floats(1e-6, 1 - 1e-6))
def test_betainc_symmetry(a: float, b: float, x: float) -> None:
    assert betainc(a, b, x) == pytest.approx(1 - betainc(b, a, 1 - x), abs=1e-8)
    assert 0.0 <= betainc(a, b, x) <= 1.0


@given(st.integers(1, 30), st.floats(0.0, 80.0))
def test_gammainc_of_integer_shape_matches_the_poisson_sum(a: int, x: float) -> None:
    # P(a, x) = 1 - e^-x * sum_{k<a} x^k / k!
    poisson = math.exp(-x) * sum(x**k / math.factorial(k) for k in range(a))
    assert gammainc(a, x) == pytest.approx(1 - poisson, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 60.0), st.floats(0.0, 60.0), st.sampled_from([0.1, 0.5, 1.0, 2.0]))
def test_dirichlet_of_two_answers_is_the_beta_rule(v1: float, v2: float, prior: float) -> None:
    expected = 1 - betainc(v1 + prior, v2 + prior, 0.5)
    assert dirichlet_leader_probability([v1, v2], prior) == pytest.approx(expected, abs=1e-7)


def test_dirichlet_matches_a_seeded_monte_carlo() -> None:
    votes = [5.0, 3.0, 2.0]
    rng = random.Random(7)
    draws = 40_000
    wins = 0
    for _ in range(draws):
        g = [rng.gammavariate(v + 1, 1.0) for v in votes]
        wins += g[0] > max(g[1:])
    assert dirichlet_leader_probability(votes) == pytest.approx(wins / draws, abs=0.01)
    assert dirichlet_leader_probability([3.0]) == 1.0
    with pytest.raises(ValueError):
        dirichlet_leader_probability([])


def test_latency_summary() -> None:
    assert latency_summary([]) == {}
    assert latency_summary([2.0]) == {"min": 2.0, "median": 2.0, "max": 2.0, "stdev": 0.0}
    summary = latency_summary([1.0, 2.0, 6.0])
    assert summary["median"] == 2.0 and summary["stdev"] == pytest.approx(2.6457513)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(1, 8),
    st.integers(0, 10**6),
)
def test_predictive_matches_a_seeded_simulation(
    leader: int, runner: int, others: int, remaining: int, seed: int
) -> None:
    rng = random.Random(seed)
    draws, wins = 4000, 0
    alphas = [leader + 1.0, runner + 1.0, others + 1.0]
    for _ in range(draws):
        g = [rng.gammavariate(a, 1.0) for a in alphas]
        shares = [x / sum(g) for x in g]
        final = [leader, runner, others]
        for _ in range(remaining):
            final[rng.choices(range(3), shares)[0]] += 1
        wins += final[0] > max(final[1], final[2])
    assert predictive_leader_probability(leader, runner, others, remaining) == pytest.approx(
        wins / draws, abs=0.035
    )


def test_predictive_edges() -> None:
    assert predictive_leader_probability(5, 1, 0, 3) == 1.0  # out of reach
    assert predictive_leader_probability(2, 2, 0, 0) == 0.0
    assert predictive_leader_probability(3, 1, 0, 0) == 1.0
    with pytest.raises(ValueError):
        predictive_leader_probability(1, 0, 0, -1)
    with pytest.raises(ValueError):
        stop_confident(0.9, method="magic")  # type: ignore[arg-type]
    assert betainc(2, 3, 0.0) == 0.0 and betainc(2, 3, 1.0) == 1.0
    with pytest.raises(ValueError):
        betainc(0, 1, 0.5)
    with pytest.raises(ValueError):
        gammainc(0, 1.0)
    assert gammainc(2, 0.0) == 0.0
