"""Attribute values a trace backend would reject, made safe before they reach a span.

A span whose attribute cannot be encoded fails its whole export batch: text that is not
valid UTF-8 (a ``str`` carrying lone surrogates, as ``bytes.decode(errors=
"surrogateescape")`` makes) fails the OTLP protobuf encoder and the JSON-lines file; a
captured prompt of many megabytes exceeds what collectors accept (gRPC's default message
limit is 4 MiB); NaN or infinity is not JSON, and a cost of NaN means nothing. So:

* text is repaired (each invalid character becomes U+FFFD) and cut to
  :func:`max_text_length` characters, ending with a marker that says how much was cut;
* a float that is not finite is left out, and the span says which keys were cleaned
  (``tcc.telemetry.cleaned``) and a warning is logged once per key.

The common case, short ASCII text and finite numbers, costs one pass of cheap checks.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Final

from opentelemetry.util.types import AttributeValue

__all__ = [
    "CLEANED",
    "DEFAULT_MAX_TEXT_LENGTH",
    "MAX_LENGTH_ENV",
    "clean_attributes",
    "clean_text",
    "max_text_length",
]

_LOG = logging.getLogger("tcc_plugin.telemetry")

#: The span attribute listing the keys whose values were cleaned or left out.
CLEANED: Final = "tcc.telemetry.cleaned"
#: The OpenTelemetry variable that bounds attribute values; it bounds ours too.
MAX_LENGTH_ENV: Final = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
#: Characters a text value keeps when ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` is unset:
#: 1 MiB of ASCII, a quarter of gRPC's default message limit.
DEFAULT_MAX_TEXT_LENGTH: Final = 1 << 20
_MARKER = "…[tcc: {cut} characters truncated]"

# The only str content that is not encodable as UTF-8: lone surrogate code points.
_SURROGATES: Final = re.compile("[\ud800-\udfff]")

_warned: set[str] = set()


def max_text_length() -> int:
    """The longest text value kept: ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``, else 1 MiB."""
    raw = os.environ.get(MAX_LENGTH_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            return DEFAULT_MAX_TEXT_LENGTH
        if value > 0:
            return value
    return DEFAULT_MAX_TEXT_LENGTH


def clean_text(text: str, limit: int | None = None) -> str:
    """``text`` as valid UTF-8, at most ``limit`` characters (the marker included);
    ``text`` itself when it already is."""
    limit = max_text_length() if limit is None else limit
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATES.sub("\ufffd", text)
    if len(text) > limit:
        marker = _MARKER.format(cut=len(text) - limit)
        keep = max(limit - len(marker), 0)
        marker = _MARKER.format(cut=len(text) - keep)
        text = text[:keep] + marker
    return text


def _warn_once(key: str, why: str) -> None:
    if key not in _warned:
        _warned.add(key)
        _LOG.warning("span attribute %s %s; see %s on the span", key, why, CLEANED)


def clean_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """A copy of ``attributes`` a backend accepts (see the module docstring)."""
    limit = max_text_length()
    cleaned: dict[str, AttributeValue] = {}
    touched: list[str] = []
    for key, value in attributes.items():
        if (
            type(value) is int
            or type(value) is bool
            or (type(value) is float and value - value == 0)
        ):
            # The common case first: exact ints and bools, finite floats (inf - inf
            # and nan - nan are nan, which is != 0).
            cleaned[key] = value
            continue
        if isinstance(value, str):
            if len(value) > limit or not value.isascii():
                fixed = clean_text(value, limit)
                if fixed != value:
                    touched.append(key)
                    _warn_once(key, "was not valid UTF-8 or too long and was cleaned")
                value = fixed
        elif isinstance(value, float):
            if not math.isfinite(value):
                touched.append(key)
                _warn_once(key, f"was {value!r}, not a finite number, and was left out")
                continue
        elif isinstance(value, (tuple, list)):
            items = list(value)
            if any(isinstance(v, float) and not math.isfinite(v) for v in items) or any(
                isinstance(v, str) and (len(v) > limit or not v.isascii()) for v in items
            ):
                fixed_items = [
                    clean_text(v, limit) if isinstance(v, str) else v
                    for v in items
                    if not (isinstance(v, float) and not math.isfinite(v))
                ]
                if fixed_items != items:
                    touched.append(key)
                    _warn_once(key, "held values a backend rejects and was cleaned")
                value = tuple(fixed_items)
        cleaned[key] = value
    if touched:
        cleaned[CLEANED] = tuple(touched)
    return cleaned
