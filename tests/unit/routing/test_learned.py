"""The learned difficulty estimator: trained on sweep rows, saved as JSON, loaded back."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin.routing import LearnedDifficulty, estimator_from_policy, labels_from_sweep

pytest.importorskip("sklearn")


def question(rng: random.Random, hard: bool) -> str:
    if not hard:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return rng.choice([f"What is {a} + {b}?", f"Add {a} and {b}.", f"What is {a} times {b}?"])
    nums = [rng.randint(10, 999) for _ in range(5)]
    return (
        f"A shop has {nums[0]} apples. Each day it sells {nums[1]} and then receives "
        f"{nums[2]} more; after {nums[3] % 9 + 2} days, half of the remaining apples are "
        f"sold at {nums[4]} cents each. What is the total revenue in dollars?"
    )


def sweep_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        hard = rng.random() < 0.4
        text = question(rng, hard)
        for s in range(2):
            for cell, right in (("single@0", not hard), ("forcing@4096", True)):
                rows.append({
                    "sweep": "t", "cell_id": cell, "question_id": f"q{i}", "seed": s,
                    "question": text, "correct": right, "cost_usd": 0.001, "error": None,
                })  # fmt: skip
    return rows


def test_labels_come_from_the_cheap_cell_only() -> None:
    rows = [
        {"cell_id": "cheap", "question_id": "a", "question": "x", "correct": True},
        {"cell_id": "cheap", "question_id": "a", "question": "x", "correct": False},
        {"cell_id": "cheap", "question_id": "b", "question": "y", "correct": True},
        {"cell_id": "think", "question_id": "b", "question": "y", "correct": False},
        {"cell_id": "cheap", "question_id": "c", "question": "z", "correct": True, "error": "x"},
    ]
    # a: right in 1 of 2 seeds -> hard (at least half wrong); b: right -> easy; c: errored
    assert labels_from_sweep(rows, cheap_cell="cheap") == (["x", "y"], [True, False])
    with pytest.raises(ValueError, match="no results of cell 'nope'"):
        labels_from_sweep(rows, cheap_cell="nope")


def test_trained_on_one_split_it_ranks_held_out_questions(tmp_path: Path) -> None:
    estimator = LearnedDifficulty.from_sweep(sweep_rows(200, seed=1), cheap_cell="single@0")
    questions, hard = labels_from_sweep(sweep_rows(100, seed=2), cheap_cell="single@0")
    scores = [estimator.estimate(q) for q in questions]
    hard_scores = [s for s, h in zip(scores, hard, strict=True) if h]
    easy_scores = [s for s, h in zip(scores, hard, strict=True) if not h]
    pairs = [(h, e) for h in hard_scores for e in easy_scores]
    auc = sum(h > e for h, e in pairs) / len(pairs)
    assert auc > 0.95
    assert all(0.0 <= s <= 1.0 for s in scores)

    path = tmp_path / "router.json"
    estimator.save(path)
    loaded = LearnedDifficulty.load(path)
    assert [loaded.estimate(q) for q in questions] == scores
    assert json.loads(path.read_text())["trained_on"] == 200


def test_the_policy_router_section_holds_the_estimator() -> None:
    estimator = LearnedDifficulty.from_sweep(sweep_rows(60, seed=3), cheap_cell="single@0")

    policy = type("Policy", (), {"router": {"estimator": estimator.to_dict(), "routes": []}})
    loaded = estimator_from_policy(policy())
    assert loaded.estimate("What is 2 + 3?") == estimator.estimate("What is 2 + 3?")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format": "something-else"}, "not a learned difficulty estimator"),
        ({"format": "tcc-plugin/learned-difficulty@1", "buckets": 4}, "incomplete"),
        (
            {"format": "tcc-plugin/learned-difficulty@1", "buckets": 4, "weights": [0.0] * 3},
            "6 \\+ buckets weights; got 3 for 4 buckets",
        ),
        (
            {
                "format": "tcc-plugin/learned-difficulty@1",
                "buckets": 1,
                "weights": [float("nan")] * 7,
            },
            "finite",
        ),
        ([1, 2], "not a learned difficulty estimator"),
    ],
)
def test_a_file_that_does_not_match_the_estimator_is_refused(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LearnedDifficulty.from_dict(data)


def test_training_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both easy and hard"):
        LearnedDifficulty.fit(["a", "b"], [False, False])
    with pytest.raises(ValueError, match="this policy holds no learned router"):
        estimator_from_policy(type("P", (), {"router": None})())
