"""The public surface of tcc_plugin.sampling, pinned."""

from __future__ import annotations

import subprocess
import sys

import tcc_plugin.sampling as sampling

PUBLIC = [
    "BatchSample",
    "BatchSizeError",
    "batched",
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


def test_all_is_pinned() -> None:
    assert sorted(sampling.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(sampling, name) is not None, name


def test_importing_sampling_imports_no_provider_sdk() -> None:
    code = (
        "import sys, tcc_plugin.sampling\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'openai', 'anthropic', 'langchain_core', 'httpx', 'httpx2', 'numpy'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
