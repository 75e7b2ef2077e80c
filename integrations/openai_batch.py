"""A wave of samples as one ``n=k`` request, through an instrumented ``openai`` client.

``choices_batch(client, model=..., messages=..., max_tokens=...)`` is a
:class:`~tcc_plugin.sampling.BatchSample` for :func:`tcc_plugin.self_consistency`,
:func:`~tcc_plugin.best_of_n` (``OpenAI``) and their async twins (``AsyncOpenAI``):
each wave of ``k`` samples the group's launch policy starts is one streamed
``chat.completions.create(..., n=k)`` (with ``prompt=`` instead of ``messages=``, a
legacy ``completions.create``: raw-prompt continuations); its ``k`` choices become ``k``
candidates (each a one-choice ``ChatCompletion`` / ``Completion`` whose ``usage`` is
``None``: the request's usage is charged once, on its call span). Inside a draw,
:func:`~tcc_plugin.sampling.current_sample` is the batch's first sample.

The request goes through the instrumentation like any call: it reserves its worst case
for ``k`` outputs (``max_tokens`` times ``k``), and settles the exact total, counted per the
server's dialect (:data:`~.server_dialect.CHOICE_USAGE`: vLLM's usage sums the choices;
llama-server's stream sends one usage chunk per choice, which are summed). It streams
so that a batch cancelled in flight (the group stopped on another wave, a timeout, a
deadline) is charged what it streamed so far, one token per chunk received (a sync
group's worker stops reading at its next chunk), never zero.

Refused (:class:`BatchUnsupported`, before anything is sent): a client that is not
instrumented; a server that is neither vLLM nor llama-server (how its usage counts
choices is unknown); OpenAI's reasoning models (o-series, gpt-5), which do not accept
``n > 1`` on every model. Anthropic's API has no ``n``: draw its samples one by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

try:
    import openai
    from openai.types import Completion
    from openai.types.chat import ChatCompletion
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "tcc_plugin.integrations.openai_batch needs the OpenAI SDK: "
        "pip install 'tcc-plugin[openai]'"
    ) from exc

from tcc_plugin.adapter import INSTRUMENTED_ATTRIBUTE
from tcc_plugin.plans import adrive, drive
from tcc_plugin.sampling import BatchSample, BatchSizeError, current_sample

from .openai import _reasons
from .server_dialect import CHOICE_USAGE, reasoning_of

__all__ = ["AsyncChoicesBatch", "BatchUnsupported", "ChoicesBatch", "choices_batch"]

_SET_BY_BATCH: Final = ("n", "stream", "stream_options")
_FINISH_REASONS: Final = frozenset({"stop", "length", "tool_calls", "content_filter"})


class BatchUnsupported(ValueError):
    """The client or its server cannot draw a batch as one ``n=k`` request."""


def _adapter(client: Any, path: str) -> Any:
    """The instrumentation's adapter of ``path`` on ``client``."""
    state = vars(client).get(INSTRUMENTED_ATTRIBUTE)
    adapters = getattr(getattr(state, "interceptor", None), "adapters", None)
    if not isinstance(adapters, Mapping) or path not in adapters:
        raise BatchUnsupported(
            "choices_batch needs an instrumented client (tcc_plugin.instrument(client)): "
            "an uninstrumented n=k request would be neither budgeted nor counted"
        )
    return adapters[path]


class _Choices:
    """The choices of one streamed ``n=k`` chat (or legacy) completion, assembled by
    index (the servers interleave them)."""

    def __init__(self, k: int, legacy: bool = False) -> None:
        self.k = k
        self.legacy = legacy
        self.content: dict[int, list[str]] = {}
        self.reasoning: dict[int, list[str]] = {}
        self.reasoning_key: str = "reasoning_content"
        self.finish: dict[int, str] = {}
        self.head: dict[str, Any] = {}

    def feed(self, chunk: Any) -> None:
        if not self.head:
            self.head = {
                "id": getattr(chunk, "id", "") or "",
                "created": getattr(chunk, "created", 0) or 0,
                "model": getattr(chunk, "model", "") or "",
            }
        for choice in getattr(chunk, "choices", None) or ():
            index = getattr(choice, "index", 0) or 0
            delta = getattr(choice, "delta", None)
            text = getattr(choice, "text", None) if self.legacy else getattr(delta, "content", None)
            if isinstance(text, str) and text:
                self.content.setdefault(index, []).append(text)
            thought = reasoning_of(delta)
            if thought:
                if getattr(delta, "reasoning", None) is not None:
                    self.reasoning_key = "reasoning"
                self.reasoning.setdefault(index, []).append(thought)
            reason = getattr(choice, "finish_reason", None)
            if isinstance(reason, str):
                self.finish[index] = reason

    def completions(self) -> list[ChatCompletion | Completion]:
        """One one-choice ``ChatCompletion`` (legacy: ``Completion``) per choice, in
        index order; a server that sent fewer choices than asked is a
        :class:`BatchSizeError` (never an empty candidate)."""
        seen = set(self.content) | set(self.reasoning) | set(self.finish)
        missing = [i for i in range(self.k) if i not in seen]
        if missing:
            raise BatchSizeError(
                f"the server was asked for n={self.k} choices and sent none for "
                f"{len(missing)} of them (indices {missing[:8]})"
            )
        out: list[ChatCompletion | Completion] = []
        for index in range(self.k):
            reason = self.finish.get(index, "length")
            if self.legacy:
                legacy = {
                    "index": index,
                    "text": "".join(self.content.get(index, ())),
                    "finish_reason": reason if reason in ("stop", "length") else "stop",
                    "logprobs": None,
                }
                head = {**self.head, "object": "text_completion", "choices": [legacy]}
                out.append(Completion.model_validate(head))
                continue
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(self.content.get(index, ())),
            }
            if index in self.reasoning:
                message[self.reasoning_key] = "".join(self.reasoning[index])
            choice = {
                "index": index,
                "message": message,
                "finish_reason": reason if reason in _FINISH_REASONS else "stop",
                "logprobs": None,
            }
            out.append(
                ChatCompletion.model_validate(
                    {**self.head, "object": "chat.completion", "choices": [choice]}
                )
            )
        return out


class _ChoicesBatchBase:
    def __init__(self, client: Any, request: Mapping[str, Any], max_batch: int | None) -> None:
        given = sorted(k for k in _SET_BY_BATCH if k in request)
        if given:
            raise TypeError(f"choices_batch sets {', '.join(given)} itself; do not pass them")
        if "model" not in request or ("messages" in request) == ("prompt" in request):
            raise TypeError(
                "choices_batch needs the request's model, and messages (chat) or prompt "
                "(legacy completions)"
            )
        if max_batch is not None and (
            isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
        ):
            raise ValueError(f"choices_batch: max_batch must be a positive int, got {max_batch!r}")
        self.client = client
        self.request = dict(request)
        self.max_batch = max_batch
        self.legacy = "prompt" in request
        self.adapter = _adapter(client, "/completions" if self.legacy else "/chat/completions")
        self.checked = False

    def _check(self) -> None:
        """Refuse what cannot be drawn as one exactly counted ``n=k`` request."""
        server = getattr(self.adapter, "server", None)
        if server is None:  # OpenAI's own API (or Azure)
            if _reasons(self.request.get("model")):
                raise BatchUnsupported(
                    f"OpenAI's reasoning models ({self.request.get('model')!r}) do not accept "
                    "n > 1 on every model: draw these samples one by one"
                )
        elif server.dialect not in CHOICE_USAGE:
            raise BatchUnsupported(
                f"the server at {server.root} is neither vLLM nor llama-server (or did not "
                "answer): how its usage counts n choices is unknown, so a batch could be "
                "under-charged; declare it with instrument(client, server=...) or draw "
                "samples one by one"
            )
        self.checked = True

    def _create(self, k: int) -> dict[str, Any]:
        return {**self.request, "n": k, "stream": True, "stream_options": {"include_usage": True}}

    def _resource(self) -> Any:
        return self.client.completions if self.legacy else self.client.chat.completions

    def __repr__(self) -> str:
        return f"choices_batch(model={self.request.get('model')!r}, max_batch={self.max_batch})"


class ChoicesBatch(_ChoicesBatchBase, BatchSample[ChatCompletion | Completion]):
    """A wave as one ``n=k`` request of an instrumented ``openai.OpenAI`` (sync)."""

    def draw(self, k: int) -> list[ChatCompletion | Completion]:
        if not self.checked:
            if self.adapter.needs_setup:
                drive(self.adapter.setup(), self.adapter.perform)
            self._check()
        choices = _Choices(k, self.legacy)
        sample = current_sample()
        stream = self._resource().create(**self._create(k))
        with stream:
            for chunk in stream:
                choices.feed(chunk)
                if sample is not None and sample.cancelled:
                    # the group went on without us: free the server's slots; charged
                    # what was streamed, as a cancelled call
                    stream.cancel()
                    break
        return choices.completions()


class AsyncChoicesBatch(_ChoicesBatchBase, BatchSample[ChatCompletion | Completion]):
    """A wave as one ``n=k`` request of an instrumented ``openai.AsyncOpenAI``."""

    async def draw(self, k: int) -> list[ChatCompletion | Completion]:
        if not self.checked:
            if self.adapter.needs_setup:
                await adrive(self.adapter.setup(), self.adapter.aperform)
            self._check()
        choices = _Choices(k, self.legacy)
        stream = await self._resource().create(**self._create(k))
        try:
            async for chunk in stream:
                choices.feed(chunk)
        finally:
            await stream.close()
        return choices.completions()


def choices_batch(
    client: openai.OpenAI | openai.AsyncOpenAI, *, max_batch: int | None = None, **request: Any
) -> ChoicesBatch | AsyncChoicesBatch:
    """A batch source drawing ``k`` samples as one ``chat.completions.create(**request,
    n=k)`` of the instrumented ``client`` (``AsyncOpenAI``: for the async group
    functions). ``request`` is what one sample would send (``model``, ``messages``,
    ``max_tokens``, ``temperature``, ``seed``, ``extra_body``, ...); ``max_batch`` caps
    ``k`` (e.g. the server's parallel slots). See the module's docs for what is refused."""
    if isinstance(client, openai.AsyncOpenAI):
        return AsyncChoicesBatch(client, request, max_batch)
    if isinstance(client, openai.OpenAI):
        return ChoicesBatch(client, request, max_batch)
    raise TypeError(
        f"choices_batch needs an openai.OpenAI or AsyncOpenAI client, not "
        f"{type(client).__qualname__} (Anthropic's API has no n: draw samples one by one)"
    )
