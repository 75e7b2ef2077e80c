"""Recorded provider exchanges (VCR cassettes in ``<repo>/../shared/cassettes``), read
in place, and an *independent* reading of the usage each recorded body reports.

The usage reading here is deliberately written apart from ``tcc_plugin.readers``: it
is what the replay tests compare our spans with. It follows each provider's documented
rule and nothing else (Anthropic ``input_tokens`` excludes cache reads and writes;
OpenAI ``prompt_tokens`` / ``input_tokens`` include them).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[3]
CASSETTES = REPO / ".." / "shared" / "cassettes"


def cassettes_dir() -> Path | None:
    """The cassette folder, or ``None`` when it is absent (outside CI the replay tests
    then skip; in CI, ``CI=true``, they fail: the folder is part of the build)."""
    return CASSETTES if (CASSETTES / "index.json").is_file() else None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Exchange:
    """One recorded request and its response."""

    file: str
    index: int
    client: str  # "sync" | "async", as the recording test used it
    method: str
    url: str
    request_body: Any
    status: int
    headers: dict[str, str]
    wire_body: bytes  # as sent on the wire (gzip-compressed when content-encoding says)
    content: bytes  # decoded
    sse: bool = field(default=False)

    @property
    def id(self) -> str:
        return f"{self.file.removesuffix('.yaml')}#{self.index}"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def provider(self) -> str:
        if "anthropic" in self.host:
            return "anthropic"
        if self.host.endswith("azure.com"):
            return "azure"
        return "openai"

    @property
    def json(self) -> Any:
        """The decoded JSON body (``None`` for a stream or a non-JSON body)."""
        if self.sse:
            return None
        try:
            return json.loads(self.content)
        except ValueError:
            return None

    def events(self) -> list[tuple[str | None, Any]]:
        """The SSE events of a stream body: ``(event name, parsed data)``, ``[DONE]``
        as the string."""
        found: list[tuple[str | None, Any]] = []
        for frame in self.content.decode().replace("\r\n", "\n").split("\n\n"):
            name: str | None = None
            data: list[str] = []
            for line in frame.split("\n"):
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
            if not data:
                continue
            text = "\n".join(data)
            found.append((name, text if text == "[DONE]" else json.loads(text)))
        return found

    def frames(self) -> list[bytes]:
        """The wire body cut at SSE frame ends (one network read each), else whole."""
        if not self.sse or self.headers.get("content-encoding"):
            return [self.wire_body]
        parts = self.wire_body.split(b"\n\n")
        return [p + b"\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _first(value: Any) -> str:
    return str(value[0]) if isinstance(value, list) else str(value)


def _exchange(file: str, index: int, client: str, item: dict[str, Any]) -> Exchange:
    request, response = item["request"], item["response"]
    if "parsed_body" in request:
        request_body = request["parsed_body"]
    else:
        raw = request.get("body")
        request_body = json.loads(raw) if raw else None
    headers = {k.lower(): _first(v) for k, v in (response.get("headers") or {}).items()}
    for hop in ("content-length", "transfer-encoding"):  # recomputed for the replay
        headers.pop(hop, None)
    body = response.get("body")
    if "parsed_body" in response:  # pydantic-ai stores JSON bodies parsed
        wire = json.dumps(response["parsed_body"]).encode()
        headers.pop("content-encoding", None)
        headers.setdefault("content-type", "application/json")
    else:
        string = body.get("string") if isinstance(body, dict) else body
        wire = string if isinstance(string, bytes) else (string or "").encode()
    encoding = headers.get("content-encoding", "")
    content = gzip.decompress(wire) if encoding == "gzip" else wire
    status = response["status"]
    sse = "event-stream" in headers.get("content-type", "") or content.startswith(
        (b"data:", b"event:")
    )
    if sse and "content-type" not in headers:
        headers["content-type"] = "text/event-stream"
    return Exchange(
        file=file,
        index=index,
        client=client,
        method=request["method"],
        url=request["uri"],
        request_body=request_body,
        status=int(status["code"] if isinstance(status, dict) else status),
        headers=headers,
        wire_body=wire,
        content=content,
        sse=sse,
    )


@cache
def index() -> tuple[dict[str, Any], ...]:
    folder = cassettes_dir()
    if folder is None:
        return ()
    return tuple(json.loads((folder / "index.json").read_text()))


@cache
def load(file: str) -> tuple[Exchange, ...]:
    folder = cassettes_dir()
    assert folder is not None
    entry = next(e for e in index() if e["file"] == file)
    data = yaml.safe_load((folder / file).read_text())
    return tuple(
        _exchange(file, i, entry["client"], item) for i, item in enumerate(data["interactions"])
    )


def all_exchanges() -> Iterator[Exchange]:
    for entry in index():
        yield from load(entry["file"])


def exchange(file: str, i: int = 0) -> Exchange:
    return load(file)[i]


# -- the independent usage reading ----------------------------------------------------------
INPUT = "gen_ai.usage.input_tokens"
OUTPUT = "gen_ai.usage.output_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"


def _anthropic(usage: dict[str, Any]) -> dict[str, int]:
    read = usage.get("cache_read_input_tokens")
    write = usage.get("cache_creation_input_tokens")
    found = {
        INPUT: usage["input_tokens"] + (read or 0) + (write or 0),
        OUTPUT: usage["output_tokens"],
    }
    if read is not None:
        found[CACHE_READ] = read
    if write is not None:
        found[CACHE_WRITE] = write
    thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
    if thinking is not None:
        found[REASONING] = thinking
    return found


def _openai(usage: dict[str, Any]) -> dict[str, int]:
    chat = "prompt_tokens" in usage
    inp = usage["prompt_tokens" if chat else "input_tokens"]
    out = usage["completion_tokens" if chat else "output_tokens"]
    details_in = usage.get("prompt_tokens_details" if chat else "input_tokens_details") or {}
    details_out = usage.get("completion_tokens_details" if chat else "output_tokens_details")
    found = {INPUT: inp, OUTPUT: out}
    if details_in.get("cached_tokens") is not None:
        found[CACHE_READ] = details_in["cached_tokens"]
    if details_in.get("cache_write_tokens") is not None:
        found[CACHE_WRITE] = details_in["cache_write_tokens"]
    if (details_out or {}).get("reasoning_tokens") is not None:
        found[REASONING] = details_out["reasoning_tokens"]
    return found


def recorded_usage(ex: Exchange) -> dict[str, int] | None:
    """The usage the recorded body reports, as GenAI attribute -> tokens (only the
    fields it reports); ``None`` when it reports none."""
    if ex.sse:
        return _stream_usage(ex)
    body = ex.json
    if not isinstance(body, dict) or not isinstance(body.get("usage"), dict):
        return None
    usage = body["usage"]
    return _anthropic(usage) if body.get("type") == "message" else _openai(usage)


def _stream_usage(ex: Exchange) -> dict[str, int] | None:
    anthropic: dict[str, Any] = {}
    found: dict[str, int] | None = None
    for _, data in ex.events():
        if not isinstance(data, dict):
            continue
        kind = data.get("type")
        if kind == "message_start":
            anthropic.update(data["message"].get("usage") or {})
        elif kind == "message_delta":
            anthropic.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
            found = _anthropic(anthropic)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            usage = data["response"].get("usage")
            found = _openai(usage) if usage else None
        elif isinstance(data.get("usage"), dict):
            found = _openai(data["usage"])
    return found


def recorded_model(ex: Exchange) -> str | None:
    """The first non-empty model string the recorded body names."""
    if not ex.sse:
        body = ex.json
        model = body.get("model") if isinstance(body, dict) else None
        return model or None
    for _, data in ex.events():
        if not isinstance(data, dict):
            continue
        for holder in (data, data.get("message"), data.get("response")):
            if isinstance(holder, dict) and holder.get("model"):
                return str(holder["model"])
    return None


def recorded_tool_calls(ex: Exchange) -> dict[str, int]:
    """Per-call-billed tool items (``web_search_call``, ``file_search_call``) in a
    recorded OpenAI Responses output."""
    response: Any = ex.json
    if ex.sse:
        response = None
        for _, data in ex.events():
            if isinstance(data, dict) and data.get("type") == "response.completed":
                response = data["response"]
    if not isinstance(response, dict) or response.get("object") != "response":
        return {}
    found: dict[str, int] = {}
    for item in response.get("output") or ():
        if item.get("type") in ("web_search_call", "file_search_call"):
            found[item["type"]] = found.get(item["type"], 0) + 1
    return found
