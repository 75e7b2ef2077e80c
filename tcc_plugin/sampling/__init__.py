"""Parallel scaling: best-of-N with verifiers, self-consistency voting, adaptive stop.

``best_of_n`` / ``abest_of_n`` keep the candidate a verifier scores highest;
``self_consistency`` / ``aself_consistency`` keep the answer most samples agree on.
Samples run concurrently under a concurrency limit, never beyond what the active
budgets can pay for; a stop rule can end a group early, cancelling what still runs.
Each group is one span (``tcc.sampling.*``) parenting its samples' calls.

Strategies are small composable objects: extractors (``boxed() | last_number()``),
verifiers (``exact_answer(42) & llm_judge(ask)``), vote rules (``majority()``,
``weighted()``) stop rules (``stop_confident(0.95) | stop_unbeatable()``) and launch policies
(``launch_adaptive()``, ``launch_waves(4)``: how many samples are in flight).
See ``docs/sampling.md``.
"""

from __future__ import annotations

from tcc_plugin.sampling.admission import worst_case
from tcc_plugin.sampling.api import abest_of_n, aself_consistency, best_of_n, self_consistency
from tcc_plugin.sampling.batch import BatchSample, BatchSizeError, batched
from tcc_plugin.sampling.code_verifier import SandboxUnavailable, code_verifier, extract_code
from tcc_plugin.sampling.extract import (
    Extractor,
    boxed,
    choice,
    final_answer,
    first_of,
    last_number,
    math_answer,
    normalize,
    normalize_number,
    normalize_text,
    text_of,
    whole,
)
from tcc_plugin.sampling.group_plan import SampleContext, current_sample
from tcc_plugin.sampling.launch import (
    LaunchPolicy,
    LaunchPolicyError,
    launch_adaptive,
    launch_all,
    launch_sequential,
    launch_waves,
)
from tcc_plugin.sampling.result import Candidate, SamplingResult, Verdict
from tcc_plugin.sampling.stopping import (
    SamplingState,
    StopRule,
    stop_after_completed,
    stop_after_delay,
    stop_all,
    stop_any,
    stop_confident,
    stop_never,
    stop_on_score,
    stop_unbeatable,
)
from tcc_plugin.sampling.verifiers import (
    Verifier,
    all_of,
    any_of,
    exact_answer,
    llm_judge,
    mean_of,
    parse_judgement,
)
from tcc_plugin.sampling.voting import Tally, VoteRule, majority, weighted

__all__ = [
    "BatchSample",
    "BatchSizeError",
    "Candidate",
    "Extractor",
    "LaunchPolicy",
    "LaunchPolicyError",
    "SampleContext",
    "SamplingResult",
    "SamplingState",
    "SandboxUnavailable",
    "StopRule",
    "Tally",
    "Verdict",
    "Verifier",
    "VoteRule",
    "abest_of_n",
    "all_of",
    "any_of",
    "aself_consistency",
    "batched",
    "best_of_n",
    "boxed",
    "choice",
    "code_verifier",
    "current_sample",
    "exact_answer",
    "extract_code",
    "final_answer",
    "first_of",
    "last_number",
    "launch_adaptive",
    "launch_all",
    "launch_sequential",
    "launch_waves",
    "llm_judge",
    "majority",
    "math_answer",
    "mean_of",
    "normalize",
    "normalize_number",
    "normalize_text",
    "parse_judgement",
    "self_consistency",
    "stop_after_completed",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_confident",
    "stop_never",
    "stop_on_score",
    "stop_unbeatable",
    "text_of",
    "weighted",
    "whole",
    "worst_case",
]
