"""An OpenAI client under a dollar budget: exact reasoning tokens, cost, clamps, streams.

    python examples/openai_budget.py                 # needs OPENAI_API_KEY
    python examples/openai_budget.py --offline       # no key: a stand-in answers the HTTP

The client is instrumented once (``tcc_plugin.instrument``); nothing else in the calling
code changes. Inside ``budget(usd=..., policy="clamp")`` each call reserves its worst case
before it is sent, an over-large ``max_completion_tokens`` is lowered to what the budget
can still pay, and a call that cannot fit is refused without reaching the API. Every call
is a span with its reasoning tokens and cost, written to a JSON-lines file.

``--offline`` plugs an ``httpx2.MockTransport`` into the real OpenAI client: it answers
like the API does (reasoning and cached tokens included, streams as SSE), so the example
runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from typing import Any

import openai

import tcc_plugin
from tcc_plugin import BudgetExceeded, budget
from tcc_plugin.exporters.jsonl import read_spans
from tcc_plugin.instrument import instrument, thinking

QUESTIONS = [
    "What is 17 * 23?",
    "Is 391 prime?",
    "How many trailing zeros does 1000! have?",
    "Prove that the sum of the first n odd numbers is n^2.",
]


def ask(client: openai.OpenAI, question: str, *, stream: bool) -> str:
    """One question; a streamed answer is read to the end."""
    messages = [{"role": "user", "content": question}]
    if not stream:
        reply = client.chat.completions.create(
            model="o4-mini", messages=messages, max_completion_tokens=8000
        )
        return reply.choices[0].message.content or ""
    # Usage is read from the stream (the client asks for it); the caller sees no extra
    # usage-only chunk. This one may think harder: "medium" for this block only.
    with thinking("medium"):
        chunks = client.chat.completions.create(
            model="o4-mini", messages=messages, max_completion_tokens=8000, stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)


def run(client: openai.OpenAI, usd: str) -> tuple[tcc_plugin.Budget, list[str]]:
    """Ask the questions under one budget; returns it and the questions it refused."""
    instrument(client, thinking="low")  # reasoning_effort="low" unless a call says otherwise
    refused: list[str] = []
    with budget(usd=usd, policy="clamp", min_output_tokens=500, name="questions") as scope:
        for i, question in enumerate(QUESTIONS):
            try:
                answer = ask(client, question, stream=i == 2)
            except BudgetExceeded as exc:
                refused.append(question)
                answer = f"refused by the budget ({exc.limit} limit)"
            print(f"{question[:45]:45s} -> {answer}")
    return scope, refused


def offline_client() -> openai.OpenAI:
    """A real OpenAI client whose HTTP is answered in-process, like the API would."""
    import httpx2

    answers = {
        "What is 17 * 23?": ("391", 180, 0),
        "Is 391 prime?": ("No: 391 = 17 x 23.", 900, 256),
        "How many trailing zeros does 1000! have?": ("249", 2400, 1024),
        "Prove that the sum of the first n odd numbers is n^2.": ("By induction ...", 3000, 0),
    }

    def usage(prompt: int, cached: int, completion: int, reasoning: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
        }

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        question = body["messages"][-1]["content"]
        text, thought, cached = answers[question]
        cap = body.get("max_completion_tokens") or 100_000
        reasoning = min(thought, cap - 40)
        completion = reasoning + min(40, cap - reasoning)
        base = {"id": "chatcmpl-offline", "created": 1741570283, "model": "o4-mini-2025-04-16"}
        numbers = usage(1200 + len(question), cached, completion, reasoning)
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            return httpx2.Response(
                200,
                json={**base, "object": "chat.completion", "choices": [choice], "usage": numbers},
            )
        chunk = {**base, "object": "chat.completion.chunk"}
        words = text.split(" ")
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
            for w in [w + " " for w in words[:-1]] + words[-1:]
        ]
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if body.get("stream_options", {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": numbers})
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=sse.encode()
        )

    return openai.OpenAI(
        api_key="sk-offline", http_client=httpx2.Client(transport=httpx2.MockTransport(handler))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="answer the HTTP in-process")
    parser.add_argument("--usd", default="0.02", help="the budget in USD")
    parser.add_argument("--traces", default="tcc-traces.jsonl")
    args = parser.parse_args(argv)

    handle = tcc_plugin.configure("jsonl", path=args.traces, metrics=False)
    client = offline_client() if args.offline else openai.OpenAI()
    scope, refused = run(client, args.usd)
    handle.force_flush()
    handle.shutdown()

    print()
    made = scope.spent.calls + len(refused)
    for span in list(read_spans(args.traces))[-made:]:  # this run's calls (the file appends)
        a = span["attributes"]
        if not span["name"].startswith("chat "):
            continue
        cap = a.get("tcc.budget.clamped.max_tokens", a.get("gen_ai.request.max_tokens"))
        stream = "stream" if a.get("gen_ai.request.stream") else ""
        print(
            f"{span['name']:12s} {stream:6s} {a.get('tcc.budget.outcome', ''):8s} "
            f"max_tokens {cap!s:>5s}  output {a.get('gen_ai.usage.output_tokens', '-')!s:>5s}"
            f" (reasoning {a.get('gen_ai.usage.reasoning.output_tokens', '-')!s:>5s})"
            f"  cost ${a.get('tcc.cost.usd', 0.0):.6f}"
        )
    charge = scope.spent
    print(
        f"\n{charge.calls} calls, {len(refused)} refused; {charge.output_tokens} output tokens of "
        f"which {charge.reasoning_tokens} reasoning; spent ${charge.usd:.6f} of "
        f"${Decimal(args.usd):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
