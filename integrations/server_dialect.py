"""The OpenAI-protocol dialects of self-hosted servers: vLLM and llama.cpp's ``llama-server``.

Protocol logic only, written once: no I/O and no SDK import. What needs the server
(detecting the dialect, counting tokens) is a *plan*: a generator that yields
:class:`Fetch` steps and receives :class:`Reply` objects, run by a sync or async
driver (:func:`tcc_plugin.plans.drive` / :func:`~tcc_plugin.plans.adrive`) in the
integration that owns the HTTP client. Responses and chunks are read and patched in
place whether they are SDK objects (pydantic models, extra fields kept) or dicts.

What the dialects differ in, and what is normalised here:

- the dialect is declared, or detected once per server root from ``GET /v1/models``
  (``owned_by``: ``"vllm"`` or ``"llamacpp"``), else ``GET /props`` (llama-server);
- reasoning: ``message.reasoning`` (vLLM now) or ``reasoning_content`` (vLLM before,
  llama-server), streamed as ``delta.reasoning`` / ``delta.reasoning_content``;
- reasoning tokens: the server's ``completion_tokens_details.reasoning_tokens`` when
  present, else ``/tokenize`` of the reasoning text (vLLM ``{"prompt"}`` ->
  ``{"tokens", "count"}``; llama-server ``{"content"}`` -> ``{"tokens"}``); a raw
  continuation that is a thinking phase (budget forcing) is all reasoning;
- ``n`` (:data:`CHOICE_USAGE`): vLLM's usage sums the completion tokens of all
  choices, in a response and in a stream's usage chunk. llama-server's *response*
  reports the completion tokens of one choice only, but its *stream* sends each
  choice's usage (chat: a usage chunk per choice; legacy completions: on each choice's
  finish chunk); so a non-streamed ``n > 1`` is sent there as ``n`` single-choice
  requests (seeds offset) whose usages are summed, the prompt counted once, and a
  streamed one goes out as one request whose per-choice usage chunks are summed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

logger = logging.getLogger("tcc_plugin")

__all__ = [
    "CHOICE_USAGE",
    "DIALECTS",
    "DIALECT_ATTRIBUTE",
    "ChoiceUsage",
    "Dialect",
    "DialectError",
    "Fetch",
    "Reply",
    "StreamState",
    "Unanswered",
    "check_dialect",
    "detect",
    "finish_usage",
    "known_dialect",
    "merge_choices",
    "one_request_for_choices",
    "reasoning_of",
    "server_root",
    "single_choice_seeds",
]

Dialect = Literal["vllm", "llama.cpp"]
DIALECTS: Final[tuple[Dialect, ...]] = ("vllm", "llama.cpp")
DIALECT_ATTRIBUTE: Final = "tcc.server.dialect"
_OWNERS: Final[Mapping[str, Dialect]] = {"vllm": "vllm", "llamacpp": "llama.cpp"}


@dataclass(frozen=True, slots=True)
class ChoiceUsage:
    """How a server's usage counts the completion tokens of an ``n``-choice request.

    ``response``: a response's ``usage.completion_tokens`` covers ``"all"`` choices, or
    only ``"one"``. ``stream``: a stream (``include_usage``) ends with one usage chunk
    ``"summed"`` over the choices, or sends one ``"per_choice"`` (each after that
    choice's last chunk; :class:`StreamState` sums them, the prompt counted once)."""

    response: Literal["all", "one"]
    stream: Literal["summed", "per_choice"]


CHOICE_USAGE: Final[Mapping[Dialect, ChoiceUsage]] = {
    # vLLM (entrypoints/openai chat and completion serving): a response's
    # completion_tokens = sum(len(output.token_ids) for output in outputs); a stream's
    # final usage chunk = sum(previous_num_tokens) over the choices.
    "vllm": ChoiceUsage(response="all", stream="summed"),
    # llama-server: a response's usage is one choice's (measured: n=3 answered with
    # one choice's 14 tokens); a stream sends each choice's usage after its last chunk
    # (chat: a usage-only chunk; legacy completions: on the choice's finish chunk).
    "llama.cpp": ChoiceUsage(response="one", stream="per_choice"),
}


def one_request_for_choices(dialect: Dialect, stream: bool) -> bool:
    """Whether an ``n``-choice request can go to a ``dialect`` server as one request
    and still be charged exactly (else it is sent as ``n`` single-choice requests)."""
    return stream or CHOICE_USAGE[dialect].response == "all"


class DialectError(ValueError):
    """The server at a base URL is not the self-hosted server that was asked for."""


@dataclass(frozen=True, slots=True)
class Fetch:
    """An auxiliary HTTP exchange a plan needs: ``method`` on ``url`` (absolute) with a
    JSON ``body``; answered with a :class:`Reply`. ``retries``: how many times an
    idempotent exchange is retried when the server did not answer (a probe is not: a
    down server must be found out at once)."""

    method: Literal["GET", "POST"]
    url: str
    body: Mapping[str, Any] | None = None
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a :class:`Fetch`: the status (``None``: no answer at all, e.g.
    connection refused), the JSON body when there was one, and the error seen."""

    status: int | None
    data: Any = None
    error: str | None = None


def check_dialect(value: object) -> Dialect | None:
    """``value`` as a dialect (``None`` stays ``None``); ``ValueError`` otherwise."""
    if value is None:
        return None
    if value == "llamacpp" or value == "llama-server":
        return "llama.cpp"
    for dialect in DIALECTS:
        if value == dialect:
            return dialect
    raise ValueError(f"server must be one of {', '.join(DIALECTS)} (or None); got {value!r}")


def server_root(base_url: str) -> str:
    """The server's root URL: ``base_url`` without a trailing ``/v1``."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


# -- reading and patching SDK objects or dicts -----------------------------------------------
def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _set(obj: Any, key: str, value: Any) -> None:
    if isinstance(obj, dict):
        obj[key] = value
    else:
        setattr(obj, key, value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def reasoning_of(message: Any) -> str | None:
    """``reasoning`` (vLLM now), else ``reasoning_content`` (vLLM before, llama-server)
    of a message or a streamed delta."""
    if message is None:
        return None
    value = _get(message, "reasoning")
    if value is None:
        value = _get(message, "reasoning_content")
    return value if isinstance(value, str) else None


def _usage_block(
    prompt: int, completion: int, cached: int | None, reasoning: int | None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        block["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
    if reasoning is not None:
        block["completion_tokens_details"] = {"reasoning_tokens": min(reasoning, completion)}
    return block


def _counts(usage: Any) -> tuple[int, int, int | None, int | None]:
    """prompt, completion, cached and reported reasoning tokens of a usage block."""
    prompt = _int(_get(usage, "prompt_tokens")) or 0
    completion = _int(_get(usage, "completion_tokens")) or 0
    cached = _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
    reasoning = _int(_get(_get(usage, "completion_tokens_details"), "reasoning_tokens"))
    return prompt, completion, cached, reasoning


def _replace_usage(holder: Any, block: dict[str, Any]) -> None:
    """Put the usage ``block`` on ``holder`` (a response or chunk), as the type its
    current usage has (an SDK model is rebuilt from the block)."""
    current = _get(holder, "usage")
    if current is None or isinstance(current, Mapping):
        _set(holder, "usage", block)
        return
    _set(holder, "usage", type(current).model_validate(block))


# -- detection --------------------------------------------------------------------------------
_DETECTED: dict[str, Dialect | None] = {}
_DETECTED_LOCK = threading.Lock()


def detect(root: str, declared: Dialect | None) -> Generator[Fetch, Reply, Dialect | None]:
    """The dialect of the server at ``root``, asked once per root (then remembered).

    With ``declared``, a server found to be something else raises :class:`DialectError`
    naming what was found; without, such a server is ``None`` (not self-hosted). A
    server that does not answer at all (down, unreachable) decides nothing:
    :class:`Unanswered` is raised, and the caller asks again at its next call."""
    with _DETECTED_LOCK:
        known = root in _DETECTED
        found = _DETECTED.get(root)
    evidence = "remembered"
    if not known:
        found, evidence, answered = yield from _probe(root)
        if not answered:
            raise Unanswered(declared, evidence)
        with _DETECTED_LOCK:
            _DETECTED[root] = found
    if declared is not None and found != declared:
        raise DialectError(
            f"{root} was declared a {declared} server, but it is not: {evidence}"
            if evidence != "remembered"
            else f"{root} was declared a {declared} server, but it was found to be "
            f"{found or 'neither vLLM nor llama-server'}"
        )
    return found


def known_dialect(base_url: str) -> Dialect | None:
    """The dialect detected for the server at ``base_url`` in this process, if any (what
    a LangChain handler, which sees no response body, can know of a server)."""
    with _DETECTED_LOCK:
        return _DETECTED.get(server_root(base_url))


def _probe(root: str) -> Generator[Fetch, Reply, tuple[Dialect | None, str, bool]]:
    """What the server says it is: its dialect, the evidence, whether it answered."""
    models = yield Fetch("GET", root + "/v1/models")
    owners = sorted(
        {str(_get(m, "owned_by")) for m in _get(models.data, "data") or () if _get(m, "owned_by")}
    )
    for owner in owners:
        if owner in _OWNERS:
            return _OWNERS[owner], f"GET /v1/models: owned_by {owner!r}", True
    props = yield Fetch("GET", root + "/props")
    if isinstance(props.data, Mapping) and "default_generation_settings" in props.data:
        return "llama.cpp", "GET /props: llama-server's settings", True
    seen = f"owned_by {', '.join(owners)}" if owners else f"status {models.status}"
    if models.error and not owners:
        seen += f" ({models.error[:200]})"
    evidence = f"GET /v1/models answered {seen}; GET /props answered status {props.status}"
    return None, evidence, models.status is not None or props.status is not None


class Unanswered(Exception):
    """The server did not answer the detection: nothing is decided yet."""

    def __init__(self, declared: Dialect | None, evidence: str) -> None:
        super().__init__(evidence)
        self.declared = declared


# -- token counts -----------------------------------------------------------------------------
def tokenize(root: str, dialect: Dialect, model: str | None, text: str) -> Fetch:
    """The request that tokenizes ``text`` (no special tokens added)."""
    if dialect == "vllm":
        body: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
        if model:
            body["model"] = model
        return Fetch("POST", root + "/tokenize", body, retries=2)
    body = {"content": text, "add_special": False, "parse_special": True}
    return Fetch("POST", root + "/tokenize", body, retries=2)


def _token_count(reply: Reply) -> int | None:
    tokens = _get(reply.data, "tokens")
    if reply.status != 200 or not isinstance(tokens, list):
        return None
    return len(tokens)


def finish_usage(
    holder: Any,
    reasoning_texts: Sequence[str],
    *,
    root: str,
    dialect: Dialect,
    model: str | None,
    reasoning_output: bool = False,
) -> Generator[Fetch, Reply, None]:
    """Complete the usage of ``holder`` (a response, or a stream's usage chunk) in
    place: reasoning tokens from the server when it reported them, else counted through
    ``/tokenize`` of ``reasoning_texts``; all the output when ``reasoning_output``.
    A holder without usage is left alone (the call is charged its reservation). When
    ``/tokenize`` fails, the whole output counts as reasoning (an upper bound: a
    reasoning cap is never under-charged) with a warning; the call itself succeeds."""
    usage = _get(holder, "usage")
    if usage is None:
        return
    prompt, completion, cached, reported = _counts(usage)
    reasoning: int | None = reported
    if reasoning_output:
        reasoning = completion
    elif not reported and any(reasoning_texts):
        reasoning = 0
        for text in reasoning_texts:
            if text:
                reply = yield tokenize(root, dialect, model, text)
                count = _token_count(reply)
                if count is None:
                    logger.warning(
                        "tcc_plugin: %s /tokenize failed (status %s: %s); the reasoning "
                        "tokens of this call are counted as its whole output (%d), an upper "
                        "bound",
                        root, reply.status, reply.error or "no token list", completion,
                    )  # fmt: skip
                    reasoning = completion
                    break
                reasoning += count
    if reasoning != reported:
        _replace_usage(holder, _usage_block(prompt, completion, cached, reasoning))


# -- n on llama-server ------------------------------------------------------------------------
def single_choice_seeds(n: int, seed: int | None) -> list[int | None]:
    """The seeds of ``n`` single-choice requests standing for one ``n``-choice request
    (offset, so that the samples differ; none when the request set none)."""
    return [None if seed is None else seed + i for i in range(n)]


def merge_choices(responses: Sequence[Any]) -> Any:
    """``n`` single-choice responses as the first one with ``n`` choices (indices
    renumbered) and their exact usage: completions summed, the prompt counted once."""
    first = responses[0]
    choices: list[Any] = []
    completion = 0
    for i, response in enumerate(responses):
        for choice in _get(response, "choices") or ():
            _set(choice, "index", i)
            choices.append(choice)
        completion += _counts(_get(response, "usage"))[1]
    prompt, _, cached, _ = _counts(_get(first, "usage"))
    _set(first, "choices", choices)
    if _get(first, "usage") is not None:
        _replace_usage(first, _usage_block(prompt, completion, cached, None))
    return first


# -- streams ----------------------------------------------------------------------------------
class StreamState:
    """What the chunks of one or more streams (llama-server ``n`` fan-out: read one
    after the other, choice indices offset) say: the reasoning deltas per choice, and
    the servers' usage-only chunks, held back so that one usage chunk (completions
    summed) ends the stream."""

    def __init__(self, *, per_choice: bool = False) -> None:
        self.reasoning: dict[int, list[str]] = {}
        self.usage_chunks: list[Any] = []
        # usage may ride on a choice's last chunk (llama-server's legacy completions):
        # held back too, so that one summed usage chunk ends the stream
        self.per_choice = per_choice

    def feed(self, chunk: Any, offset: int = 0) -> bool:
        """Note ``chunk`` of the ``offset``-th stream; whether to pass it on now."""
        choices = _get(chunk, "choices") or ()
        for choice in choices:
            index = (_int(_get(choice, "index")) or 0) + offset
            if offset:
                _set(choice, "index", index)
            piece = reasoning_of(_get(choice, "delta"))
            if piece:
                self.reasoning.setdefault(index, []).append(piece)
        usage = _get(chunk, "usage")
        if usage is None:
            return True
        if not choices:
            self.usage_chunks.append(chunk)
            return False
        if self.per_choice:
            self.usage_chunks.append(_usage_only(chunk))
            _set(chunk, "usage", None)
        return True

    def reasoning_texts(self) -> list[str]:
        return ["".join(self.reasoning[i]) for i in sorted(self.reasoning)]

    def final_chunk(self) -> Any:
        """The usage chunk that ends the stream (``None`` if the server sent none)."""
        if not self.usage_chunks:
            return None
        first = self.usage_chunks[0]
        if len(self.usage_chunks) > 1:
            prompt, _, cached, _ = _counts(_get(first, "usage"))
            completion = sum(_counts(_get(c, "usage"))[1] for c in self.usage_chunks)
            _replace_usage(first, _usage_block(prompt, completion, cached, None))
        return first


def _usage_only(chunk: Any) -> Any:
    """A copy of ``chunk`` with its usage and no choices."""
    if isinstance(chunk, Mapping):
        return {**chunk, "choices": []}
    return chunk.model_copy(update={"choices": []})


def host_port(root: str) -> tuple[str | None, int | None]:
    """The host and port of a server root URL."""
    parts = urlsplit(root)
    return parts.hostname, parts.port
