"""A difficulty estimator learned from ``tcc sweep`` results.

The sweep knows, per question, whether the cheap method answered it. A logistic
regression (scikit-learn, fitted once) learns P(the cheap route gets it wrong) from the
question's text; that probability is the difficulty a :class:`~tcc_plugin.routing.Router`
compares with each route's ``up_to``.

Features are plain text features, not an embedding: counts (words, numbers, operators,
digits, multi-step words) plus word unigrams and bigrams hashed into a fixed number of
buckets with a stable hash (CRC-32). Why not an embedding model: the ones on the package
index pull in a deep-learning runtime of hundreds of MB, or fetch weights from a hub at
run time (which this SDK must not need); on short eval questions, text features separate
easy from hard about as well as their length and structure allow, and the estimate
costs microseconds, so routing stays cheap. The featuriser is written here rather than
taken from scikit-learn's ``HashingVectorizer`` so that serving needs neither
scikit-learn nor NumPy and the hash never changes between versions: scikit-learn is
needed only to train (extra ``routing``).

The fitted model is a small JSON object (weights, intercept, feature settings): saved
beside a sweep's policy (its ``router`` section) and loaded with
:func:`LearnedDifficulty.from_dict` / :func:`estimator_from_policy`; no pickle.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tcc_plugin.routing.estimators import DifficultyEstimator, text_of_input

__all__ = ["FORMAT", "LearnedDifficulty", "estimator_from_policy", "labels_from_sweep"]

FORMAT: Final = "tcc-plugin/learned-difficulty@1"
_WORD: Final = re.compile(r"[a-z]+|\d+|[^\sa-z\d]", re.IGNORECASE)
_NUMBER: Final = re.compile(r"\d+(?:[.,]\d+)?")
_OPERATOR: Final = re.compile(r"[-+*/^=<>%]")
_STEP_WORDS: Final = frozenset(
    {"then", "after", "each", "every", "total", "remaining", "twice", "half", "percent"}
    | {"times", "prove", "why"}
)
_DENSE: Final = ("bias", "log_words", "numbers", "operators", "digits", "step_words")


def _features(text: str, buckets: int) -> dict[int, float]:
    """Sparse features of ``text``: the dense counts first, then hashed n-grams."""
    lowered = text.lower()
    tokens = _WORD.findall(lowered)
    words = [t for t in tokens if t.isalpha()]
    dense = (
        1.0,
        math.log1p(len(words)),
        math.log1p(len(_NUMBER.findall(lowered))),
        math.log1p(len(_OPERATOR.findall(lowered))),
        math.log1p(sum(c.isdigit() for c in lowered)),
        math.log1p(sum(w in _STEP_WORDS for w in words)),
    )
    out: dict[int, float] = {i: v for i, v in enumerate(dense) if v}
    grams = [*tokens, *(f"{a} {b}" for a, b in itertools.pairwise(tokens))]
    if grams:
        weight = 1.0 / math.sqrt(len(grams))
        for gram in grams:
            index = len(_DENSE) + zlib.crc32(gram.encode("utf-8")) % buckets
            out[index] = out.get(index, 0.0) + weight
    return out


class LearnedDifficulty(DifficultyEstimator):
    """P(the cheap route fails) for an input, from a fitted logistic regression."""

    name = "learned"

    def __init__(
        self,
        weights: Sequence[float],
        intercept: float,
        *,
        buckets: int,
        cheap: str | None = None,
        trained_on: int = 0,
    ) -> None:
        if buckets < 1 or len(weights) != len(_DENSE) + buckets:
            raise ValueError(
                f"a learned estimator has {len(_DENSE)} + buckets weights; got "
                f"{len(weights)} for {buckets} buckets"
            )
        if not all(math.isfinite(w) for w in weights) or not math.isfinite(intercept):
            raise ValueError("a learned estimator's weights must be finite numbers")
        self.weights = tuple(float(w) for w in weights)
        self.intercept = float(intercept)
        self.buckets = buckets
        self.cheap = cheap
        self.trained_on = trained_on

    def estimate(self, value: Any) -> float:
        z = self.intercept
        for index, x in _features(text_of_input(value), self.buckets).items():
            z += self.weights[index] * x
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    async def aestimate(self, value: Any) -> float:
        return self.estimate(value)

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        questions: Sequence[str],
        hard: Sequence[bool],
        *,
        buckets: int = 1024,
        regularization: float = 1.0,
        cheap: str | None = None,
    ) -> LearnedDifficulty:
        """Fit on ``questions`` labelled ``hard`` (the cheap route failed them).

        Needs scikit-learn (``pip install 'tcc-plugin[routing]'``)."""
        if len(questions) != len(hard):
            raise ValueError("questions and labels differ in length")
        if len(set(map(bool, hard))) < 2:
            raise ValueError(
                "training a difficulty estimator needs both easy and hard questions "
                f"(got {len(hard)} questions, all {'hard' if hard and hard[0] else 'easy'})"
            )
        try:
            from scipy.sparse import csr_matrix  # type: ignore[import-untyped]
            from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - the extra is installed in CI
            raise ImportError(
                "training a learned router needs scikit-learn: pip install 'tcc-plugin[routing]'"
            ) from exc
        rows, cols, data = [], [], []
        for row, text in enumerate(questions):
            for col, x in _features(text, buckets).items():
                rows.append(row)
                cols.append(col)
                data.append(x)
        matrix = csr_matrix((data, (rows, cols)), shape=(len(questions), len(_DENSE) + buckets))
        model = LogisticRegression(C=regularization, fit_intercept=False, max_iter=2000)
        model.fit(matrix, [int(bool(h)) for h in hard])
        weights = [float(w) for w in model.coef_[0]]
        # The bias feature carries the intercept (fit_intercept=False regularises it too,
        # which keeps a tiny training set from pinning every estimate to its base rate).
        return cls(weights, 0.0, buckets=buckets, cheap=cheap, trained_on=len(questions))

    @classmethod
    def from_sweep(
        cls,
        rows: Iterable[Mapping[str, Any]],
        *,
        cheap_cell: str,
        buckets: int = 1024,
        regularization: float = 1.0,
    ) -> LearnedDifficulty:
        """Fit on a sweep's results: a question is hard when ``cheap_cell`` answered
        it wrong in at least half its seeds (see :func:`labels_from_sweep`)."""
        questions, hard = labels_from_sweep(rows, cheap_cell=cheap_cell)
        return cls.fit(
            questions, hard, buckets=buckets, regularization=regularization, cheap=cheap_cell
        )

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "buckets": self.buckets,
            "cheap": self.cheap,
            "trained_on": self.trained_on,
            "intercept": self.intercept,
            "weights": list(self.weights),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnedDifficulty:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(
                f"not a learned difficulty estimator (format {found!r}, expected {FORMAT!r})"
            )
        try:
            return cls(
                data["weights"],
                data.get("intercept", 0.0),
                buckets=int(data["buckets"]),
                cheap=data.get("cheap"),
                trained_on=int(data.get("trained_on", 0)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a learned difficulty estimator's file is incomplete: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LearnedDifficulty:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def labels_from_sweep(
    rows: Iterable[Mapping[str, Any]], *, cheap_cell: str
) -> tuple[list[str], list[bool]]:
    """Questions and hard/easy labels from sweep result rows (``question_id``,
    ``question``, ``cell_id``, ``correct``): hard when ``cheap_cell`` was wrong in at
    least half of the question's seeds. Rows of other cells and errored rows are
    ignored."""
    tally: dict[str, list[int]] = {}
    texts: dict[str, str] = {}
    for row in rows:
        if row.get("cell_id") != cheap_cell or row.get("error"):
            continue
        qid = str(row["question_id"])
        texts[qid] = str(row.get("question", ""))
        right, seen = tally.get(qid, [0, 0])
        tally[qid] = [right + int(bool(row.get("correct"))), seen + 1]
    if not tally:
        raise ValueError(f"no results of cell {cheap_cell!r} to learn from")
    order = sorted(tally)
    return [texts[q] for q in order], [tally[q][0] * 2 <= tally[q][1] for q in order]


def estimator_from_policy(policy: Any) -> LearnedDifficulty:
    """The learned estimator saved in a policy's ``router`` section (a policy object
    with a ``router`` attribute, or the section itself as a mapping)."""
    section = getattr(policy, "router", policy)
    if section is None:
        raise ValueError("this policy holds no learned router (its router section is empty)")
    if isinstance(section, Mapping) and "estimator" in section:
        section = section["estimator"]
    return LearnedDifficulty.from_dict(section)
