"""Read usage out of provider responses and stream chunks, by their shape.

Works on the SDK objects (openai, anthropic, langchain-core messages) and on their JSON
dicts alike, without importing any SDK. Each provider's rule, in one place:

- OpenAI Chat Completions / legacy Completions (and OpenAI-compatible servers):
  ``prompt_tokens`` counts all input, ``prompt_tokens_details.cached_tokens`` and
  ``cache_write_tokens`` are parts of it; ``completion_tokens`` counts all output,
  ``completion_tokens_details.reasoning_tokens`` a part of it.
- OpenAI Responses: ``input_tokens`` / ``output_tokens`` are inclusive likewise, with
  ``input_tokens_details`` / ``output_tokens_details``.
- Anthropic: ``input_tokens`` *excludes* cache reads and writes, so input is
  ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``; the 1-hour
  share of the writes is ``cache_creation.ephemeral_1h_input_tokens``; thinking is
  ``output_tokens_details.thinking_tokens``, a part of ``output_tokens``.
- Anthropic ``usage.iterations`` (context compaction, the advisor tool): the top-level
  usage stays the call's tokens; the other steps (``type`` not ``"message"``) are
  :class:`~tcc_plugin.usage.BilledStep` entries priced at their own ``model``;
  ``usage.server_tool_use`` counts the server-side tool requests billed per request;
  in an OpenAI Responses ``output``, ``web_search_call`` and ``file_search_call`` items
  are counted likewise.
- Not reported is not zero: a usage field the response omits is listed in
  ``ResponseInfo.unreported`` (no span attribute is written for it). When Anthropic
  does not report thinking tokens but the response carries thinking, the reasoning
  count is *estimated* (``ResponseInfo.estimated``): the reported output tokens split
  in proportion to the characters of thinking vs the rest of the output (text, tool
  input), at least 1.
- LangChain ``usage_metadata``: ``input_tokens`` already includes cache tokens;
  ``input_token_details`` has ``cache_read``/``cache_creation`` (or the Anthropic
  ``ephemeral_5m_input_tokens``/``ephemeral_1h_input_tokens``), and
  ``output_token_details.reasoning``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from tcc_plugin.adapter import ResponseInfo
from tcc_plugin.errors import ResponseError, UsageError
from tcc_plugin.telemetry import names
from tcc_plugin.usage import BilledStep, Usage

__all__ = [
    "ChatStreamAccumulator",
    "StreamAccumulator",
    "read_chat_response",
    "read_response",
    "read_usage",
]

_MISSING = object()


# How to read a type's fields (0: a mapping, 1: a pydantic v2 model, 2: attributes), and
# whether a pydantic model class has an attribute (a property, say): both cached per type,
# as these objects come in a few SDK types only.
_KINDS: dict[type, int] = {}
_CLASS_HAS: dict[tuple[type, str], bool] = {}


def _kind(cls: type) -> int:
    if issubclass(cls, Mapping):
        return 0
    return 1 if hasattr(cls, "__pydantic_fields__") else 2


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    cls = type(obj)
    if cls is dict:  # the common case, without an ABC isinstance check
        return obj.get(key, default)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = _KINDS[cls] = _kind(cls)
    if kind == 1:
        # The SDKs' responses: fields live in __dict__, extra ones in __pydantic_extra__;
        # a missing attribute would cost pydantic's __getattr__ and an exception, and
        # most of what is probed here is missing.
        found = obj.__dict__.get(key, _MISSING)
        if found is not _MISSING:
            return found
        extra = getattr(obj, "__pydantic_extra__", None)
        if extra and key in extra:
            return extra[key]
        has = _CLASS_HAS.get((cls, key))
        if has is None:
            has = _CLASS_HAS[(cls, key)] = hasattr(cls, key)
        if not has:
            return default
    elif kind == 0:
        return obj.get(key, default)
    return getattr(obj, key, default)


def _has(obj: Any, key: str) -> bool:
    if type(obj) is dict or isinstance(obj, Mapping):
        return key in obj
    return _get(obj, key, _MISSING) is not _MISSING


def _int(obj: Any, key: str) -> int:
    value = _get(obj, key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ResponseError(f"usage field {key!r} is not an integer: {value!r}")
    return value


def _is_anthropic_usage(usage: Any) -> bool:
    return any(
        _has(usage, k) for k in ("cache_read_input_tokens", "cache_creation_input_tokens")
    ) or _has(_get(usage, "output_tokens_details"), "thinking_tokens")


def _anthropic_usage(usage: Any) -> Usage:
    read = _int(usage, "cache_read_input_tokens")
    write = _int(usage, "cache_creation_input_tokens")
    write_1h = _int(_get(usage, "cache_creation"), "ephemeral_1h_input_tokens")
    return Usage(
        input=_int(usage, "input_tokens") + read + write,
        cached_input=read,
        cache_write=write,
        cache_write_1h=min(write_1h, write),
        output=_int(usage, "output_tokens"),
        reasoning=_int(_get(usage, "output_tokens_details"), "thinking_tokens"),
    )


def _chat_usage(usage: Any) -> Usage:
    prompt = _get(usage, "prompt_tokens_details")
    completion = _get(usage, "completion_tokens_details")
    return Usage(
        input=_int(usage, "prompt_tokens"),
        cached_input=_int(prompt, "cached_tokens"),
        cache_write=_int(prompt, "cache_write_tokens"),
        output=_int(usage, "completion_tokens"),
        reasoning=_int(completion, "reasoning_tokens"),
    )


def _responses_usage(usage: Any) -> Usage:
    details_in = _get(usage, "input_tokens_details")
    details_out = _get(usage, "output_tokens_details")
    return Usage(
        input=_int(usage, "input_tokens"),
        cached_input=_int(details_in, "cached_tokens"),
        cache_write=_int(details_in, "cache_write_tokens"),
        output=_int(usage, "output_tokens"),
        reasoning=_int(details_out, "reasoning_tokens"),
    )


_NONE: frozenset[str] = frozenset()
_UNREPORTED: dict[tuple[bool, bool, bool], frozenset[str]] = {
    (read, write, reasoning): frozenset(
        name
        for name, missing in (
            ("cached_input", read),
            ("cache_write", write),
            ("reasoning", reasoning),
        )
        if missing
    )
    for read in (False, True)
    for write in (False, True)
    for reasoning in (False, True)
}


def _unreported(usage: Any) -> frozenset[str]:
    """The :class:`Usage` fields an OpenAI or Anthropic usage block does not report."""
    if usage is None:
        return _NONE
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        return _chat_unreported(usage)
    if _is_anthropic_usage(usage):
        return _anthropic_unreported(usage)
    if _has(usage, "input_token_details") or _has(usage, "output_token_details"):
        return _NONE  # LangChain's usage_metadata: read as the integration gives it
    details_in = _get(usage, "input_tokens_details")
    read = _get(details_in, "cached_tokens") is None
    write = _get(details_in, "cache_write_tokens") is None
    reasoning = _get(_get(usage, "output_tokens_details"), "reasoning_tokens") is None
    return _UNREPORTED[read, write, reasoning]


def _anthropic_unreported(usage: Any) -> frozenset[str]:
    """:func:`_unreported` of a usage block known to be an Anthropic one."""
    read = _get(usage, "cache_read_input_tokens") is None
    write = _get(usage, "cache_creation_input_tokens") is None
    reasoning = _get(_get(usage, "output_tokens_details"), "thinking_tokens") is None
    return _UNREPORTED[read, write, reasoning]


# OpenAI Responses output items billed per call (the fee table prices them).
_RESPONSES_TOOL_ITEMS = frozenset({"web_search_call", "file_search_call"})


def _responses_tools(response: Any) -> dict[str, int]:
    """Calls of server-side tools billed per call in a Responses ``output``."""
    found: dict[str, int] = {}
    for item in _get(response, "output") or ():
        kind = _get(item, "type")
        if kind in _RESPONSES_TOOL_ITEMS:
            found[kind] = found.get(kind, 0) + 1
    return found


def _chat_unreported(usage: Any) -> frozenset[str]:
    """:func:`_unreported` of a usage block known to be a Chat Completions one."""
    details_in = _get(usage, "prompt_tokens_details")
    if details_in is None:
        read = write = True
    else:
        read = _get(details_in, "cached_tokens") is None
        write = _get(details_in, "cache_write_tokens") is None
    reasoning = _get(_get(usage, "completion_tokens_details"), "reasoning_tokens") is None
    return _UNREPORTED[read, write, reasoning]


def _server_tools(usage: Any) -> dict[str, int]:
    tools = _get(usage, "server_tool_use")
    if tools is None:
        return {}
    found: dict[str, int] = {}
    items = tools.items() if isinstance(tools, Mapping) else _fields(tools)
    for name, count in items:
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            found[str(name)] = count
    return found


def _fields(obj: Any) -> list[tuple[str, Any]]:
    data = getattr(obj, "__dict__", {})
    extra = getattr(obj, "__pydantic_extra__", None) or {}
    return [*data.items(), *extra.items()]


def _extra_steps(usage: Any) -> tuple[BilledStep, ...]:
    """Anthropic ``usage.iterations`` other than the call's own message steps."""
    iterations = _get(usage, "iterations")
    if not iterations:
        return ()
    steps: list[BilledStep] = []
    for item in iterations:
        kind = _get(item, "type")
        if kind == "message":
            continue  # the top-level usage already counts these
        model = _get(item, "model")
        steps.append(
            BilledStep(
                kind=str(kind or "step"),
                usage=_anthropic_usage(item),
                model=model if isinstance(model, str) and model else None,
            )
        )
    return tuple(steps)


def _estimate_reasoning(output: int, thinking_chars: int, other_chars: int) -> int:
    """Reasoning tokens when only the output total is reported: the total split in
    proportion to thinking characters vs other output characters (at least 1)."""
    share = output * thinking_chars // max(thinking_chars + other_chars, 1)
    return min(max(share, 1), output)


def _content_chars(content: Any) -> tuple[int, int]:
    """(thinking, other) characters of Anthropic content blocks."""
    thinking = other = 0
    for block in content or ():
        kind = _get(block, "type")
        if kind == "thinking":
            thinking += len(_get(block, "thinking") or "")
        elif kind == "redacted_thinking":
            thinking += len(_get(block, "data") or "")
        elif kind == "text":
            other += len(_get(block, "text") or "")
        elif kind in ("tool_use", "server_tool_use"):
            value = _get(block, "input")
            with contextlib.suppress(TypeError, ValueError):  # an odd input: not counted
                other += len(json.dumps(value, default=str)) if value is not None else 0
    return thinking, other


def _anthropic_info(
    usage: Any, chars: Callable[[], tuple[int, int]]
) -> tuple[Usage, frozenset[str], frozenset[str], tuple[BilledStep, ...], dict[str, int]]:
    """Usage, unreported and estimated fields, extra steps and server tools of an
    Anthropic usage block; ``chars`` counts the response's (thinking, other output)
    characters, asked only when the thinking tokens are not reported."""
    read = _anthropic_usage(usage)
    unreported = _anthropic_unreported(usage)
    estimated = _NONE
    if "reasoning" not in unreported or not read.output:
        return read, unreported, estimated, _extra_steps(usage), _server_tools(usage)
    thinking_chars, other_chars = chars()
    if thinking_chars:
        reasoning = _estimate_reasoning(read.output, thinking_chars, other_chars)
        read = Usage(
            input=read.input,
            cached_input=read.cached_input,
            cache_write=read.cache_write,
            cache_write_1h=read.cache_write_1h,
            output=read.output,
            reasoning=reasoning,
        )
        unreported = unreported - {"reasoning"}
        estimated = frozenset({"reasoning"})
    return read, unreported, estimated, _extra_steps(usage), _server_tools(usage)


def _langchain_usage(meta: Any) -> Usage:
    details_in = _get(meta, "input_token_details") or {}
    details_out = _get(meta, "output_token_details") or {}
    write_5m = _int(details_in, "ephemeral_5m_input_tokens")
    write_1h = _int(details_in, "ephemeral_1h_input_tokens")
    write = _int(details_in, "cache_creation") or (write_5m + write_1h)
    return Usage(
        input=_int(meta, "input_tokens"),
        cached_input=_int(details_in, "cache_read"),
        cache_write=write,
        cache_write_1h=min(write_1h, write),
        output=_int(meta, "output_tokens"),
        reasoning=_int(details_out, "reasoning"),
    )


def usage_from_block(usage: Any) -> Usage:
    """Read a provider ``usage`` block (any of the shapes in the module docstring)."""
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        return _chat_usage(usage)
    if _is_anthropic_usage(usage):
        return _anthropic_usage(usage)
    if _has(usage, "input_token_details") or _has(usage, "output_token_details"):
        return _langchain_usage(usage)
    if _has(usage, "input_tokens") or _has(usage, "output_tokens"):
        return _responses_usage(usage)
    raise ResponseError(f"unrecognised usage block: {usage!r}")


def read_usage(response: Any) -> Usage | None:
    """The usage ``response`` reports, or ``None`` when it reports none.

    Accepts :class:`~tcc_plugin.usage.Usage`, a provider response object or its JSON
    dict, a LangChain message (``usage_metadata``), or a bare usage block.
    """
    if response is None:
        return None
    if isinstance(response, Usage):
        return response
    meta = _get(response, "usage_metadata")
    if meta:
        return _langchain_usage(meta)
    if _get(response, "type") == "message_start":
        response = _get(response, "message")
    if _get(response, "type") in ("response.completed", "response.incomplete", "response.failed"):
        response = _get(response, "response")
    usage = _get(response, "usage")
    if usage is None:
        if isinstance(response, Mapping) and (
            "prompt_tokens" in response or "input_tokens" in response
        ):
            return usage_from_block(response)
        return None
    if _is_anthropic_usage(usage) or _get(response, "type") == "message":
        return _anthropic_usage(usage)
    return usage_from_block(usage)


def _choice_reasons(response: Any) -> list[str]:
    reasons: list[str] = []
    for choice in _get(response, "choices") or ():
        reason = _get(choice, "finish_reason")
        if reason:
            reasons.append(str(reason))
    return reasons


def _finish_reasons(response: Any) -> tuple[str, ...]:
    reasons = _choice_reasons(response)
    stop = _get(response, "stop_reason")
    if stop:
        reasons.append(str(stop))
    status = _get(response, "status")
    if not reasons and _get(response, "object") == "response" and status:
        reasons.append(str(status))
    return tuple(reasons)


def read_response(response: Any) -> ResponseInfo:
    """Usage, model, id and finish reasons of a complete response of any known shape."""
    meta = _get(response, "response_metadata")
    if isinstance(meta, Mapping):  # a LangChain message
        reason = meta.get("finish_reason") or meta.get("stop_reason")
        return ResponseInfo(
            usage=read_usage(response),
            response_model=meta.get("model_name") or meta.get("model"),
            response_id=_get(response, "id"),
            finish_reasons=(str(reason),) if reason else (),
        )
    reasons = _finish_reasons(response)
    try:
        if _get(response, "type") == "message":
            block = _get(response, "usage")
            if block is not None:
                usage, unreported, estimated, steps, tools = _anthropic_info(
                    block, lambda: _content_chars(_get(response, "content"))
                )
                return _response_info(
                    response,
                    usage,
                    reasons,
                    unreported=unreported,
                    estimated=estimated,
                    extra_steps=steps,
                    server_tools=tools,
                )
        read = read_usage(response)
        unreported = _unreported(_get(response, "usage")) if read is not None else _NONE
    except (ResponseError, UsageError) as exc:
        return _unreadable(response, reasons, exc)
    calls = _responses_tools(response) if _get(response, "object") == "response" else None
    return _response_info(response, read, reasons, unreported=unreported, server_tools=calls)


def _response_info(
    response: Any,
    usage: Usage | None,
    reasons: tuple[str, ...],
    *,
    unreported: frozenset[str] = _NONE,
    estimated: frozenset[str] = _NONE,
    extra_steps: tuple[BilledStep, ...] = (),
    server_tools: Mapping[str, int] | None = None,
) -> ResponseInfo:
    model = _get(response, "model")
    rid = _get(response, "id")
    return ResponseInfo(
        usage=usage,
        response_model=model if isinstance(model, str) and model else None,
        response_id=rid if isinstance(rid, str) and rid else None,
        finish_reasons=reasons,
        unreported=unreported,
        estimated=estimated,
        extra_steps=extra_steps,
        server_tools=server_tools or {},
    )


def read_chat_response(response: Any) -> ResponseInfo:
    """:func:`read_response` for a response known to be an OpenAI Chat Completions or
    legacy Completions one (SDK object or JSON): the same result, without probing for
    the other shapes. Usage of another shape still goes through :func:`read_usage`."""
    usage = _get(response, "usage")
    reasons = tuple(_choice_reasons(response))
    try:
        if usage is not None and (_has(usage, "prompt_tokens") or _has(usage, "completion_tokens")):
            read: Usage | None = _chat_usage(usage)
            unreported = _chat_unreported(usage)
        else:
            read = read_usage(response)
            unreported = _unreported(usage) if read is not None else _NONE
    except (ResponseError, UsageError) as exc:
        return _unreadable(response, reasons, exc)
    return _response_info(response, read, reasons, unreported=unreported)


def _unreadable(response: Any, reasons: tuple[str, ...], error: Exception) -> ResponseInfo:
    """What is known of a response whose usage cannot be read: no usage (the call is
    charged its reservation and flagged), the reason under ``tcc.usage.error``."""
    info = _response_info(response, None, reasons)
    return replace(info, attributes={names.USAGE_ERROR: str(error)})


class StreamAccumulator:
    """Reads the chunks of a stream of any known shape (a :class:`StreamReader`).

    OpenAI chat chunks carry usage once, in the final chunk (with
    ``stream_options.include_usage``); Responses streams in ``response.completed``;
    Anthropic streams in ``message_start`` and cumulatively in ``message_delta``;
    LangChain message chunks carry additive deltas.
    """

    def __init__(self) -> None:
        self._usage: Usage | None = None
        self._anthropic: dict[str, Any] = {}
        self._model: str | None = None
        self._id: str | None = None
        self._reasons: dict[int, str] = {}
        self._unreported = _NONE
        self._tools: dict[str, int] = {}
        self._thinking_chars = 0
        self._other_chars = 0
        self.chunks = 0

    def feed(self, chunk: Any) -> None:
        self.chunks += 1
        kind = _get(chunk, "type")
        if kind == "message_start":
            message = _get(chunk, "message")
            self._remember(_get(message, "model"), _get(message, "id"))
            # message_start's output count is provisional: usage is only known (and
            # reported) once a message_delta arrives, so a stream cut before it is
            # charged its reservation rather than under-charged.
            self._merge_anthropic(_get(message, "usage"), final=False)
            return
        if kind == "message_delta":
            self._merge_anthropic(_get(chunk, "usage"), final=True)
            stop = _get(_get(chunk, "delta"), "stop_reason")
            if stop:
                self._reasons[0] = str(stop)
            return
        if kind == "content_block_delta":
            self._count_delta(_get(chunk, "delta"))
            return
        if kind == "content_block_start":
            thinking, other = _content_chars((_get(chunk, "content_block"),))
            self._thinking_chars += thinking
            self._other_chars += other
            return
        if isinstance(kind, str) and kind.startswith("response."):
            response = _get(chunk, "response")
            if response is not None:
                self._remember(_get(response, "model"), _get(response, "id"))
                if kind in ("response.completed", "response.incomplete", "response.failed"):
                    self._usage = read_usage(response)
                    self._unreported = _unreported(_get(response, "usage"))
                    self._tools = _responses_tools(response)
                    status = _get(response, "status")
                    if status:
                        self._reasons[0] = str(status)
            return
        meta = _get(chunk, "usage_metadata")
        if meta:
            delta = _langchain_usage(meta)
            self._usage = delta if self._usage is None else self._usage + delta
            return
        self._feed_chat(chunk)

    def _feed_chat(self, chunk: Any) -> None:
        """Read an OpenAI Chat Completions / legacy Completions chunk."""
        if self._model is None or self._id is None:
            self._remember(_get(chunk, "model"), _get(chunk, "id"))
        for choice in _get(chunk, "choices") or ():
            reason = _get(choice, "finish_reason")
            if reason:
                self._reasons[int(_get(choice, "index", 0) or 0)] = str(reason)
        usage = _get(chunk, "usage")
        if usage is not None:
            self._usage = usage_from_block(usage)
            self._unreported = _unreported(usage)

    def _count_delta(self, delta: Any) -> None:
        kind = _get(delta, "type")
        if kind == "thinking_delta":
            self._thinking_chars += len(_get(delta, "thinking") or "")
        elif kind == "text_delta":
            self._other_chars += len(_get(delta, "text") or "")
        elif kind == "input_json_delta":
            self._other_chars += len(_get(delta, "partial_json") or "")

    def _remember(self, model: Any, rid: Any) -> None:
        # Azure's first chunk (its prompt filter results) names model "" and id "":
        # the first non-empty strings are the response's.
        if self._model is None and isinstance(model, str) and model:
            self._model = model
        if self._id is None and isinstance(rid, str) and rid:
            self._id = rid

    def _merge_anthropic(self, usage: Any, *, final: bool) -> None:
        if usage is None:
            return
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "cache_creation",
            "output_tokens_details",
            "iterations",
            "server_tool_use",
        ):
            value = _get(usage, key)
            if value is not None:
                self._anthropic[key] = value
        if final:
            self._usage = _anthropic_usage(self._anthropic)

    def result(self) -> ResponseInfo:
        reasons = tuple(self._reasons[i] for i in sorted(self._reasons))
        if self._anthropic and self._usage is not None:
            usage, unreported, estimated, steps, tools = _anthropic_info(
                self._anthropic, lambda: (self._thinking_chars, self._other_chars)
            )
            return ResponseInfo(
                usage=usage,
                response_model=self._model,
                response_id=self._id,
                finish_reasons=reasons,
                unreported=unreported,
                estimated=estimated,
                extra_steps=steps,
                server_tools=tools,
            )
        return ResponseInfo(
            usage=self._usage,
            response_model=self._model,
            response_id=self._id,
            finish_reasons=reasons,
            unreported=self._unreported if self._usage is not None else _NONE,
            server_tools=self._tools,
        )


class ChatStreamAccumulator(StreamAccumulator):
    """A :class:`StreamAccumulator` for streams known to be OpenAI Chat Completions or
    legacy Completions chunks: the same result, without probing each chunk for the
    other shapes."""

    def feed(self, chunk: Any) -> None:
        self.chunks += 1
        self._feed_chat(chunk)
