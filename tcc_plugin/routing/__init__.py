"""Routing by difficulty: easy inputs down the cheap path, hard ones to thinking.

- :class:`Router` picks one :class:`Route` per input by a difficulty estimator
  (:class:`heuristic_difficulty`, :class:`self_assessed`, :class:`LearnedDifficulty`
  trained on ``tcc sweep`` results, or a function);
- :func:`cascade` tries routes in order and stops at the first answer an acceptance
  rule trusts (:class:`accept_agreement`, :class:`accept_score`,
  :class:`accept_logprob`, :class:`accept_when`; combine with ``&`` / ``|``).

Both are budget-aware (a route the active budgets cannot pay for is skipped, and the
decision says so) and traced (a ``route NAME`` span with ``tcc.route.*`` parents the
chosen route's calls). See ``docs/routing.md``.
"""

from __future__ import annotations

from tcc_plugin.routing.accept import (
    AcceptRule,
    Judgement,
    accept_agreement,
    accept_all,
    accept_any,
    accept_logprob,
    accept_score,
    accept_when,
)
from tcc_plugin.routing.estimators import (
    DifficultyEstimator,
    heuristic_difficulty,
    parse_difficulty,
    self_assessed,
)
from tcc_plugin.routing.learned import LearnedDifficulty, estimator_from_policy, labels_from_sweep
from tcc_plugin.routing.plan import RoutingError
from tcc_plugin.routing.route import Attempt, Route, RouteResult, escalation
from tcc_plugin.routing.router import Cascade, RouteInProgress, Router, cascade

__all__ = [
    "AcceptRule",
    "Attempt",
    "Cascade",
    "DifficultyEstimator",
    "Judgement",
    "LearnedDifficulty",
    "Route",
    "RouteInProgress",
    "RouteResult",
    "Router",
    "RoutingError",
    "accept_agreement",
    "accept_all",
    "accept_any",
    "accept_logprob",
    "accept_score",
    "accept_when",
    "cascade",
    "escalation",
    "estimator_from_policy",
    "heuristic_difficulty",
    "labels_from_sweep",
    "parse_difficulty",
    "self_assessed",
]
