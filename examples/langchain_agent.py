"""A multi-step LCEL agent under one budget, exporting one trace.

    plan (Claude) -> solve with self-consistency (o4-mini, up to 5 samples, adaptive stop)
                  -> check the voted answer with a verifier (Claude as an LLM judge)

The whole agent runs inside one budget (``BudgetRunnable``): every model call of every
step reserves its worst case before it is sent and is refused, before any HTTP request,
when the budget cannot pay for it. The run is one OpenTelemetry trace: a root span
``agent`` whose children are the plan call, the self-consistency group (itself the
parent of its samples' calls) and the judge's call, exported as JSON lines.

Run it (needs ``pip install 'tcc-plugin[langchain]'``, ``OPENAI_API_KEY`` and
``ANTHROPIC_API_KEY``)::

    python examples/langchain_agent.py "A train leaves at 9:40 and arrives at 13:05. \
How many minutes is the trip?" --usd 0.20 --trace agent-trace.jsonl

It prints a JSON summary: the answer, the vote, the judge's score and what the budget
spent; ``tcc report agent-trace.jsonl`` summarises the trace.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnablePassthrough
from opentelemetry import trace

import tcc_plugin
from tcc_plugin.integrations.langchain import BudgetRunnable, SelfConsistencyRunnable
from tcc_plugin.sampling import SamplingResult, llm_judge, stop_confident, stop_unbeatable

PLAN = ChatPromptTemplate.from_messages(
    [
        ("system", "You plan the solution of word problems. Never solve them yourself."),
        ("human", "Problem: {question}\n\nWrite a short numbered plan (at most 4 steps)."),
    ]
)
SOLVE = ChatPromptTemplate.from_messages(
    [
        (
            "human",
            "Problem: {question}\n\nPlan:\n{plan}\n\nFollow the plan step by step, then end "
            "with a last line 'Final Answer: <number>'.",
        ),
    ]
)


class Models(NamedTuple):
    planner: BaseChatModel
    solver: BaseChatModel
    judge: BaseChatModel


def default_models() -> Models:
    """The hosted models (API keys from the environment)."""
    from langchain_anthropic import ChatAnthropic
    from langchain_openai import ChatOpenAI

    claude = ChatAnthropic(model="claude-haiku-4-5", max_tokens=1024)  # type: ignore[call-arg]
    solver = ChatOpenAI(model="o4-mini", max_completion_tokens=4096, reasoning_effort="low")
    return Models(planner=claude, solver=solver, judge=claude)


def checker(judge: BaseChatModel) -> Runnable[dict[str, Any], dict[str, Any]]:
    """The check step: the sampling module's LLM judge scores the voted answer."""

    def check(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        solution: SamplingResult[Any] = state["solution"]
        verifier = llm_judge(
            lambda prompt: judge.invoke(prompt, config), question=state["question"]
        )
        if solution.winner is None:
            raise LookupError("no sample gave an answer")
        verdict = verifier.verify(solution.winner)
        return {
            "question": state["question"],
            "plan": state["plan"],
            "answer": solution.answer,
            "votes": dict(solution.counts),
            "samples": solution.launched,
            "stopped_early": solution.stopped_early,
            "score": verdict.score,
            "verified": verdict.score >= 0.7,
        }

    return RunnableLambda(check, name="check")


def build_agent(
    models: Models, *, samples: int = 5, concurrency: int = 2
) -> Runnable[dict[str, Any], dict[str, Any]]:
    """plan -> solve with self-consistency -> check, as one LCEL chain. The samples are
    drawn ``concurrency`` at a time, so that the adaptive stop saves the rest."""
    plan = PLAN | models.planner | StrOutputParser()
    solve = SelfConsistencyRunnable(
        bound=SOLVE | models.solver,
        n=samples,
        concurrency=concurrency,
        stop=stop_confident(0.95) | stop_unbeatable(),  # Adaptive-Consistency
        output="result",
        group_name="solve",
    )
    return (
        RunnablePassthrough.assign(plan=plan)
        | RunnablePassthrough.assign(solution=solve)
        | checker(models.judge)
    )


def run(
    question: str,
    budget: tcc_plugin.Budget,
    models: Models,
    *,
    samples: int = 5,
    concurrency: int = 2,
) -> dict[str, Any]:
    """Run the agent on ``question`` inside ``budget``, under one root span."""
    agent = BudgetRunnable(
        bound=build_agent(models, samples=samples, concurrency=concurrency), budget=budget
    )
    tracer = trace.get_tracer("examples.langchain_agent")
    with tracer.start_as_current_span("agent", attributes={"agent.question": question}):
        return agent.invoke({"question": question})


def summary(result: dict[str, Any], budget: tcc_plugin.Budget) -> dict[str, Any]:
    spent = budget.spent
    return {
        **{k: v for k, v in result.items() if k != "plan"},
        "spent": {
            "usd": str(spent.usd),
            "calls": spent.calls,
            "total_tokens": spent.total_tokens,
            "output_tokens": spent.output_tokens,
            "reasoning_tokens": spent.reasoning_tokens,
        },
    }


def main(argv: Sequence[str] | None = None, models: Models | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("question", nargs="?", default="What is 17 * 24?")
    parser.add_argument("--usd", default="0.20", help="the agent's budget in USD")
    parser.add_argument("--samples", type=int, default=5, help="self-consistency samples")
    parser.add_argument("--concurrency", type=int, default=2, help="samples drawn at once")
    parser.add_argument("--trace", default="tcc-traces.jsonl", help="JSON-lines span file")
    args = parser.parse_args(argv)

    budget = tcc_plugin.Budget(usd=Decimal(args.usd), name="agent")
    with tcc_plugin.configure("jsonl", path=args.trace, metrics=False):
        result = run(
            args.question,
            budget,
            models or default_models(),
            samples=args.samples,
            concurrency=args.concurrency,
        )
    report = summary(result, budget)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
