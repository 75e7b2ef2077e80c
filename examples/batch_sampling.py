"""Self-consistency on a self-hosted server, each wave of samples as ONE ``n=k`` request.

    python examples/batch_sampling.py                      # starts the embedded llama-server
    python examples/batch_sampling.py --base-url http://gpu-box:8000/v1 --model Qwen/Qwen3-8B

``choices_batch(client, **request)`` turns one instrumented ``openai`` client into a
batch sample source: the group's launch policy decides the waves (the default adaptive
one starts with as many samples as could settle the vote), and each wave goes out as one
streamed request with ``n=k``. Every choice's tokens are charged (llama-server's own
usage would count one), the prompt once, and the group span counts samples.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

import openai

import tcc_plugin
from tcc_plugin.exporters.jsonl import read_spans
from tcc_plugin.integrations.openai_batch import choices_batch
from tcc_plugin.sampling import self_consistency


@contextlib.contextmanager
def server(base_url: str | None, model: str | None) -> Iterator[tuple[str, str]]:
    if base_url and model:
        yield base_url, model
        return
    from tcc_plugin.app.local_engine import LocalEngine

    with LocalEngine(progress=False) as engine:
        yield engine.openai_base_url, engine.alias


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--gpu-usd-per-hour", default="2.50")
    parser.add_argument("--traces", default="batch-sampling-traces.jsonl")
    args = parser.parse_args()
    Path(args.traces).unlink(missing_ok=True)
    handle = tcc_plugin.configure("jsonl", path=args.traces, metrics=False)
    with server(args.base_url, args.model) as (base_url, model):
        client = tcc_plugin.instrument(
            openai.OpenAI(base_url=base_url, api_key="-"), gpu_price=args.gpu_usd_per_hour
        )
        source = choices_batch(
            client,
            model=model,
            messages=[
                {
                    "role": "system",
                    "content": "Reason briefly inside <think></think>. After </think>, "
                    "write the final answer as 'Answer: <number>'.",
                },
                {"role": "user", "content": "What is 17 * 3?"},
            ],
            max_tokens=96,
            temperature=0.7,
        )
        with tcc_plugin.budget(output_tokens=96 * args.n) as scope:
            result = self_consistency(source, n=args.n)
        print(f"answer: {result.answer} votes: {dict(result.counts)}")
        print(f"samples: {result.launched} launched, {result.completed} completed")
        print(
            f"requests: {scope.spent.calls}; output tokens charged: {scope.spent.output_tokens}"
            f" of {scope.spent.total_tokens} total; ${float(scope.spent.usd):.6f} of GPU time"
        )
    handle.force_flush()
    handle.shutdown()
    waves = [
        s["attributes"].get("gen_ai.request.choice.count", 1)
        for s in read_spans(args.traces)
        if s["name"].startswith("chat ")
    ]
    print(f"waves (samples per request): {waves}")


if __name__ == "__main__":
    main()
