"""Sweep targets that need a provider SDK: an OpenAI-protocol server (the embedded local
engine, vLLM, llama-server), OpenAI, and Anthropic.

Each target is built from a standard SDK client (``openai.OpenAI(base_url=...)``,
``anthropic.Anthropic()``), instrumented by tcc-plugin, so every call is budgeted,
priced and traced, and the sweep reads each answer's spend from its ledger. The local
engine is used only through its ``base_url`` and model name.

How a thinking budget reaches the model:

- ``llama.cpp``: the one per-request cap llama-server has, ``max_tokens`` = budget +
  ``max_answer_tokens`` (its thought and answer together); s1 forcing on raw-prompt
  completions (``/v1/completions``) gives exact thinking control;
- ``vllm``: ``thinking_token_budget`` (and the same ``max_tokens``); forcing as above;
- ``openai`` / ``anthropic``: the provider's knob through :func:`tcc_plugin.thinking`
  (``reasoning_effort``, ``thinking.budget_tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from tcc_plugin.instrument import check_thinking, instrument, thinking
from tcc_plugin.pricing import PriceBook
from tcc_plugin.sampling.extract import text_of
from tcc_plugin.sweep.grid import thinking_tokens
from tcc_plugin.sweep.target import Target
from tcc_plugin.usage import Usage

__all__ = [
    "SYSTEM",
    "CompletionsContinuer",
    "anthropic_target",
    "chatml_forcing_prompt",
    "openai_compatible_target",
]

Flavour = Literal["llama.cpp", "vllm", "openai"]

SYSTEM = (
    "Solve the problem. Think step by step, then give the result on a last line "
    "'Final Answer: <answer>'."
)
DEFAULT_THINKING = 1024  # the output cap of a call without a thinking budget


def chatml_forcing_prompt(system: str = SYSTEM) -> Any:
    """The raw ChatML prompt of a question, open in ``<think>`` (Qwen and the local
    engine's template)."""

    def prompt(question: str) -> str:
        return (
            f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n"
        )

    return prompt


class CompletionsContinuer:
    """A raw-prompt continuer over an (instrumented) OpenAI client's legacy
    completions, for :func:`tcc_plugin.budget_forcing`."""

    def __init__(self, client: Any, model: str, **options: Any) -> None:
        self.client = client
        self.model = model
        self.options = options

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str],
        reasoning: bool = False,
        attributes: Any = None,
        **options: Any,
    ) -> tuple[str, Usage, str | None]:
        """One phase; ``reasoning`` marks a thinking phase, so its output is returned as
        reasoning tokens (the OpenAI protocol does not say)."""
        response = self.client.completions.create(
            model=self.model,
            prompt=prompt,
            max_tokens=max_tokens,
            stop=list(stop) or None,
            **{**self.options, **options},
        )
        choice = response.choices[0]
        usage = response.usage
        output = getattr(usage, "completion_tokens", 0) or 0
        used = Usage(
            input=getattr(usage, "prompt_tokens", 0) or 0,
            output=output,
            reasoning=output if reasoning else 0,
        )
        return choice.text or "", used, choice.finish_reason


def _reply_text(response: Any) -> str:
    """The answer to check: the message text, with the thought before it when the
    server returns one (small models often answer inside their thought)."""
    text = text_of(response) or ""
    choices = getattr(response, "choices", None) or ()
    message = getattr(choices[0], "message", None) if choices else None
    reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
    if isinstance(reasoning, str) and reasoning and not text.strip():
        return reasoning
    return text


def openai_compatible_target(
    client: Any,
    model: str,
    *,
    flavour: Flavour = "llama.cpp",
    name: str | None = None,
    system: str = SYSTEM,
    temperature: float = 0.7,
    max_answer_tokens: int = 192,
    price_book: PriceBook | None = None,
    forcing: bool | None = None,
    max_waits: int = 3,
) -> Target:
    """A target asking ``model`` through ``client`` (an ``openai.OpenAI``, instrumented
    here with ``price_book``). ``forcing`` (default: on for ``llama.cpp``/``vllm``)
    enables s1 budget forcing over raw ChatML completions."""
    instrument(client, price_book=price_book)

    def ask(question: str, *, thinking_budget: int | str | None = None, seed: int = 0) -> str:
        budget = check_thinking(thinking_budget)
        request: dict[str, Any] = {
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "temperature": temperature,
            "seed": seed,
        }
        if flavour == "openai":
            with thinking(budget):
                return _reply_text(client.chat.completions.create(**request))
        tokens = budget if isinstance(budget, int) else DEFAULT_THINKING
        request["max_tokens"] = tokens + max_answer_tokens
        if flavour == "vllm" and isinstance(budget, int):
            request["extra_body"] = {"thinking_token_budget": budget}
        return _reply_text(client.chat.completions.create(**request))

    use_forcing = flavour != "openai" if forcing is None else forcing
    return Target(
        name=name or f"{flavour}:{model}",
        ask=ask,
        knobs=frozenset({"thinking_budget", "seed"}),
        continuer=CompletionsContinuer(client, model, temperature=temperature)
        if use_forcing
        else None,
        forcing_prompt=chatml_forcing_prompt(system) if use_forcing else None,
        forcing_options={
            "max_answer_tokens": max_answer_tokens,
            "think_stop": ["<|im_end|>"],
            "answer_stop": ["<|im_end|>"],
            "max_waits": max_waits,
        },
        max_answer_tokens=None if flavour == "openai" else max_answer_tokens,
    )


def anthropic_target(
    client: Any,
    model: str,
    *,
    name: str | None = None,
    system: str = SYSTEM,
    max_answer_tokens: int = 1024,
    price_book: PriceBook | None = None,
) -> Target:
    """A target asking an Anthropic ``model`` (extended thinking with the cell's
    budget, via :func:`tcc_plugin.thinking`) through ``client`` (instrumented here)."""
    instrument(client, price_book=price_book)

    def ask(question: str, *, thinking_budget: int | str | None = None) -> str:
        budget = check_thinking(thinking_budget)
        tokens = thinking_tokens(budget) or 0
        with thinking(budget):
            response = client.messages.create(
                model=model,
                max_tokens=tokens + max_answer_tokens,
                system=system,
                messages=[{"role": "user", "content": question}],
            )
        return text_of(response) or ""

    return Target(
        name=name or f"anthropic:{model}",
        ask=ask,
        knobs=frozenset({"thinking_budget"}),
        max_answer_tokens=max_answer_tokens,
    )
