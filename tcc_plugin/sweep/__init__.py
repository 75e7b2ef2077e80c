"""Sweeps: find the sweet spot of test-time compute on your own eval set.

``tcc_plugin.sweep(evalset, target, methods=..., budgets=...)`` runs every cell of a
grid (thinking budget x method x N) on every question, resumably and under one budget,
then analyses the results: accuracy with intervals, tokens, cost and latency per cell,
overthinking (accuracy significantly lower at a larger budget, on paired questions),
the sweet spot and the Pareto frontier. The recommendation becomes a :class:`Policy`
file that :func:`load_policy` applies to production calls. See ``docs/sweep.md``.
"""

from __future__ import annotations

from tcc_plugin.sweep.analysis import Analysis, CellStats, Comparison, analyze
from tcc_plugin.sweep.builtin import arithmetic, builtin, code_tasks
from tcc_plugin.sweep.checkers import CHECKERS, Check, Checker, as_checker
from tcc_plugin.sweep.evalset import BadEvalLine, EvalSet, Question, as_evalset, load_evalset
from tcc_plugin.sweep.grid import METHODS, Cell, grid, parse_stop
from tcc_plugin.sweep.policy import Policy, PolicyError, load_policy, policy_from_analysis
from tcc_plugin.sweep.run import (
    SweepBudgetError,
    SweepConfigError,
    SweepProgress,
    SweepResult,
    asweep,
    sweep,
)
from tcc_plugin.sweep.store import ROW_FIELDS, ResultsStore, read_rows
from tcc_plugin.sweep.target import Target, function_target

__all__ = [
    "CHECKERS",
    "METHODS",
    "ROW_FIELDS",
    "Analysis",
    "BadEvalLine",
    "Cell",
    "CellStats",
    "Check",
    "Checker",
    "Comparison",
    "EvalSet",
    "Policy",
    "PolicyError",
    "Question",
    "ResultsStore",
    "SweepBudgetError",
    "SweepConfigError",
    "SweepProgress",
    "SweepResult",
    "Target",
    "analyze",
    "arithmetic",
    "as_checker",
    "as_evalset",
    "asweep",
    "builtin",
    "code_tasks",
    "function_target",
    "grid",
    "load_evalset",
    "load_policy",
    "parse_stop",
    "policy_from_analysis",
    "read_rows",
    "sweep",
]
