"""Your own openai client on a self-hosted server: exact reasoning tokens and GPU-hour cost.

    python examples/self_hosted.py                      # starts the embedded llama-server
    python examples/self_hosted.py --base-url http://gpu-box:8000/v1 --model Qwen/Qwen3-8B

One ``tcc_plugin.instrument(...)`` line on a standard ``openai.OpenAI(base_url=...)``: the
server (vLLM or llama-server) is detected at the first call, the thought
(``reasoning_content``) is counted exactly, and each call is priced by its share of the
GPU-hour. Then s1 budget forcing runs on the same client, inside a budget.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import openai

import tcc_plugin
from tcc_plugin.forcing import budget_forcing
from tcc_plugin.integrations.server_dialect import reasoning_of


@contextlib.contextmanager
def server(base_url: str | None, model: str | None) -> Iterator[tuple[str, str]]:
    if base_url and model:
        yield base_url, model
        return
    from tcc_plugin.app.local_engine import LocalEngine

    with LocalEngine(progress=False) as engine:
        yield engine.openai_base_url, engine.alias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--gpu-usd-per-hour", default="2.50")
    parser.add_argument("--traces", default="self-hosted-traces.jsonl")
    args = parser.parse_args()
    tcc_plugin.configure(path=args.traces)
    with server(args.base_url, args.model) as (base_url, model):
        client = tcc_plugin.instrument(
            openai.OpenAI(base_url=base_url, api_key="-"), gpu_price=args.gpu_usd_per_hour
        )
        with tcc_plugin.budget(usd="1.00", reasoning_tokens=400) as scope:
            reply = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "What is 17 * 3?"}],
                max_tokens=96,
                temperature=0,
            )
            usage = reply.usage
            assert usage is not None and usage.completion_tokens_details is not None
            print("thought:", (reasoning_of(reply.choices[0].message) or "").strip()[:80])
            print("answer:", (reply.choices[0].message.content or "").strip()[:80])
            print(
                f"reasoning tokens: {usage.completion_tokens_details.reasoning_tokens}"
                f" of {usage.completion_tokens} output tokens"
            )
            prompt = "<|im_start|>user\nWhat is 17 * 3?<|im_end|>\n<|im_start|>assistant\n<think>\n"
            result = budget_forcing(
                client,
                prompt,
                model=model,
                min_thinking_tokens=16,
                max_thinking_tokens=64,
                max_answer_tokens=16,
                think_stop=["<|im_end|>"],
                answer_stop=["<|im_end|>"],
                options={"temperature": 0},
            )
            print(
                f"forcing: {result.thinking_tokens} thinking tokens, "
                f"{result.waits_appended} waits, answer {result.answer.strip()!r}"
            )
        print(f"spent: {scope.spent.calls} calls, ${float(scope.spent.usd):.6f} of GPU time")


if __name__ == "__main__":
    main()
