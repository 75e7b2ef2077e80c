"""Answer extraction and normalisation: from whatever a sample returned to a vote key.

An *extractor* takes what a sample returned (a string, a provider response, a
LangChain message...) and returns the normalised answer as a string, or ``None`` when
the sample gives no answer (it then abstains from the vote). Extractors are small
objects that chain with ``|``: ``boxed() | final_answer() | last_number()`` tries each
in turn and keeps the first answer found. A plain function ``value -> str | None``
works wherever an extractor does.

Normalisation makes equal answers equal keys: numbers become one canonical spelling
(``1,000`` = ``1000`` = ``1000.0`` = ``$1000``; ``0.5`` = ``1/2`` = ``\\frac{1}{2}``;
a fraction whose decimal does not terminate stays ``p/q``), other text is trimmed,
case-folded and stripped of surrounding markup.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

__all__ = [
    "Extractor",
    "ExtractorLike",
    "as_extractor",
    "boxed",
    "choice",
    "final_answer",
    "first_of",
    "last_number",
    "math_answer",
    "normalize",
    "normalize_number",
    "normalize_text",
    "text_of",
    "whole",
]


# -- the text of a sample ---------------------------------------------------------------
def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _blocks_text(content: Any) -> str | None:
    """Text of a message ``content``: a string, or a list of blocks (Anthropic content
    blocks, LangChain content blocks, OpenAI content parts) whose text ones are joined;
    thinking/reasoning blocks are skipped."""
    if isinstance(content, str):
        return content
    if not isinstance(content, (list, tuple)):
        return None
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        kind = _get(block, "type")
        text = _get(block, "text")
        if kind in ("text", "output_text") and isinstance(text, str):
            parts.append(text)
    return "".join(parts) if parts else None


def text_of(value: Any) -> str | None:
    """The answer text of what a sample returned, or ``None`` when it has none.

    Reads, by shape and without importing any SDK: strings; numbers; OpenAI Chat
    Completions (first choice's message content) and legacy Completions (first
    choice's text); OpenAI Responses (``output_text``, or the message items of
    ``output``); Anthropic messages and LangChain messages (text blocks of
    ``content``); and the JSON dicts of all of these. Reasoning/thinking content is
    never part of the answer text.
    """
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal, Fraction)):
        return str(value)
    choices = _get(value, "choices")
    if isinstance(choices, (list, tuple)) and choices:
        first = choices[0]
        message = _get(first, "message")
        if message is not None:
            return _blocks_text(_get(message, "content"))
        text = _get(first, "text")
        return text if isinstance(text, str) else None
    output_text = _get(value, "output_text")
    if isinstance(output_text, str):
        return output_text
    output = _get(value, "output")
    if isinstance(output, (list, tuple)):
        texts = [
            t
            for item in output
            if _get(item, "type") == "message"
            for t in [_blocks_text(_get(item, "content"))]
            if t is not None
        ]
        return "".join(texts) if texts else None
    content = _get(value, "content")
    if content is not None:
        return _blocks_text(content)
    text = _get(value, "text")
    return text if isinstance(text, str) else None


# -- normalisation ----------------------------------------------------------------------
_DECIMAL = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_UNWRAP = re.compile(
    r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
)
_LATEX_DROP = re.compile(
    r"\\(?:left|right|displaystyle|[,;:!> ]|quad|qquad)|\^\s*\{?\\circ\}?|\\%|\\\$"
)
_SPACES = re.compile(r"\s+")
_CURRENCY = "$€£¥"
_DASHES = {"\u2212": "-", "\u2013": "-", "\u2014": "-"}  # minus sign, en and em dashes


def _clean_latex(text: str) -> str:
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
    for _ in range(3):  # nested wrappers
        text = _LATEX_UNWRAP.sub(r"\1", text)
    text = _LATEX_DROP.sub("", text)
    return text.replace("{,}", ",").replace("\\cdot", "*")


def _parse_decimal(text: str) -> Fraction | None:
    if not _DECIMAL.fullmatch(text):
        return None
    try:
        return Fraction(Decimal(text.replace(",", "")))
    except (InvalidOperation, ValueError):  # pragma: no cover - the regex admits numbers only
        return None


def _wrapped(text: str) -> bool:
    """Whether ``text`` is one parenthesised group: ``(1+2)``, not ``(1)/(2)``."""
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        return False
    depth = 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def _strip_parens(text: str) -> str:
    while _wrapped(text):
        text = text[1:-1].strip()
    return text


def _to_fraction(text: str) -> Fraction | None:
    for dash, plain in _DASHES.items():
        text = text.replace(dash, plain)
    text = _clean_latex(text)
    text = text.strip().strip(_CURRENCY).rstrip("%").strip()
    text = text.replace(" ", "").replace("\u00a0", "")
    if text.endswith("."):
        text = text[:-1]
    text = _strip_parens(text)
    if text.startswith(("-", "+")) and len(text) > 1:
        sign = -1 if text[0] == "-" else 1
        rest = _strip_parens(text[1:].lstrip(_CURRENCY))
        value = _to_fraction(rest) if rest != text else None
        return None if value is None else sign * value
    if "/" in text:
        top, _, bottom = text.partition("/")
        num, den = _parse_decimal(_strip_parens(top)), _parse_decimal(_strip_parens(bottom))
        if num is None or den is None or den == 0:
            return None
        return num / den
    return _parse_decimal(text)


def _canonical(value: Fraction) -> str:
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den != 1:  # no terminating decimal: keep the fraction
        return f"{value.numerator}/{value.denominator}"
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    text = format(exact.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def normalize_number(text: str) -> str | None:
    """The canonical spelling of the number ``text`` spells, or ``None`` if it is not
    one number: ``"1,000"``, ``"1000.0"``, ``"$1000"`` -> ``"1000"``; ``"1/2"``,
    ``"0.50"``, ``"\\frac{1}{2}"`` -> ``"0.5"``; ``"2/6"`` -> ``"1/3"``; ``"50%"`` ->
    ``"50"``."""
    value = _to_fraction(text)
    return None if value is None else _canonical(value)


def normalize_text(text: str) -> str | None:
    """Trimmed, case-folded, single-spaced ``text`` without surrounding markup
    (``**``, quotes, ``$``, a trailing full stop); ``None`` if nothing is left."""
    text = _clean_latex(text)
    text = _SPACES.sub(" ", text).strip()
    previous = None
    while previous != text:
        previous = text
        text = text.strip().strip("*_`\"'$").strip()
        if text.endswith("."):
            text = text[:-1]
    text = text.casefold()
    return text or None


def normalize(text: str) -> str | None:
    """A number's canonical spelling if ``text`` is one number, else its normalised text."""
    number = normalize_number(text)
    return number if number is not None else normalize_text(text)


# -- extractors -------------------------------------------------------------------------
class Extractor(ABC):
    """Finds the answer in what a sample returned; ``None`` means no answer (abstain)."""

    @abstractmethod
    def __call__(self, value: Any) -> str | None:
        """The normalised answer of ``value``, or ``None``."""

    def __or__(self, other: ExtractorLike) -> Extractor:
        return first_of(self, other)

    def __ror__(self, other: ExtractorLike) -> Extractor:
        return first_of(other, self)


ExtractorLike = Extractor | Callable[[Any], "str | None"]


class _TextExtractor(Extractor):
    """An extractor that works on :func:`text_of` the value."""

    def __call__(self, value: Any) -> str | None:
        text = text_of(value)
        return None if text is None else self.find(text)

    @abstractmethod
    def find(self, text: str) -> str | None:
        """The normalised answer in ``text``, or ``None``."""


class _Function(Extractor):
    def __init__(self, fn: Callable[[Any], str | None]) -> None:
        self.fn = fn

    def __call__(self, value: Any) -> str | None:
        answer = self.fn(value)
        if answer is not None and not isinstance(answer, str):
            raise TypeError(
                f"an answer extractor must return a str or None, not {type(answer).__name__}"
            )
        return answer

    def __repr__(self) -> str:
        return f"as_extractor({getattr(self.fn, '__qualname__', self.fn)!r})"


def as_extractor(extract: ExtractorLike) -> Extractor:
    """``extract`` as an :class:`Extractor` (a plain function is wrapped)."""
    return extract if isinstance(extract, Extractor) else _Function(extract)


class first_of(Extractor):
    """The first answer any of ``extractors`` finds (nested chains flatten)."""

    def __init__(self, *extractors: ExtractorLike) -> None:
        flat: list[Extractor] = []
        for e in extractors:
            e = as_extractor(e)
            flat.extend(e.extractors if isinstance(e, first_of) else (e,))
        self.extractors: tuple[Extractor, ...] = tuple(flat)

    def __call__(self, value: Any) -> str | None:
        for extractor in self.extractors:
            answer = extractor(value)
            if answer is not None:
                return answer
        return None

    def __repr__(self) -> str:
        return " | ".join(repr(e) for e in self.extractors)


_NUMBER = re.compile(
    r"(?<![\w.])"  # not inside a word or another number
    r"(?:(?<![\w)])[-\u2212])?"  # a sign, unless it reads as a minus between terms
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
    r"|(?<![\w.])[-\u2212]?\.\d+"
)


class last_number(_TextExtractor):
    """The last number in the text (``1,000``, ``-3.5``, ``3/4``), normalised."""

    def find(self, text: str) -> str | None:
        found = _NUMBER.findall(text)
        for token in reversed(found):
            number = normalize_number(token)
            if number is not None:
                return number
        return None

    def __repr__(self) -> str:
        return "last_number()"


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The balanced ``{...}`` group opening at ``text[start]`` and where it ends."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


class boxed(_TextExtractor):
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced,
    LaTeX fractions and text wrappers unwrapped, then :func:`normalize`\\ d."""

    def find(self, text: str) -> str | None:
        for match in reversed(list(_BOXED.finditer(text))):
            group = _braced(text, match.end())
            if group is not None:
                return normalize(group[0])
            rest = text[match.end() :].split()
            if rest and not rest[0].startswith("{"):  # \boxed 5 (an unclosed { is no box)
                return normalize(rest[0].rstrip("$.,"))
        return None

    def __repr__(self) -> str:
        return "boxed()"


class final_answer(_TextExtractor):
    """The answer on the last line that says ``Final Answer: ...`` (or ``... final
    answer is ...``; ``label`` changes the phrase). A ``\\boxed{}`` on that line wins;
    ``numeric=True`` keeps only the last number of the line (abstaining without one)."""

    def __init__(self, label: str = "final answer", *, numeric: bool = False) -> None:
        self.label = label
        self.numeric = numeric
        words = r"\s+".join(re.escape(w) for w in label.split())
        self._pattern = re.compile(
            rf"\b{words}\b\**\s*(?::|\bis\b:?|=)\**\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE
        )

    def find(self, text: str) -> str | None:
        found = self._pattern.findall(text)
        if not found:
            return None
        line = found[-1]
        in_box = boxed().find(line)
        if in_box is not None:
            return in_box
        if self.numeric:
            return last_number().find(line)
        return normalize(line)

    def __repr__(self) -> str:
        numeric = ", numeric=True" if self.numeric else ""
        return f"final_answer({self.label!r}{numeric})"


class choice(_TextExtractor):
    """A multiple-choice letter among ``letters``, upper-cased.

    In order: the last "answer is (B)" / "Answer: B" / "option B"; else the last
    ``(B)``; else the last line holding only the letter (``B``, ``B.``, ``**B**``);
    else a text that is just the letter.
    """

    def __init__(self, letters: str = "ABCD") -> None:
        if not letters or not letters.isalpha():
            raise ValueError("letters must be a non-empty string of letters")
        self.letters = letters.upper()
        cls = f"[{re.escape(self.letters)}{re.escape(self.letters.lower())}]"
        upper = f"[{re.escape(self.letters)}]"
        self._explicit = re.compile(
            rf"(?i:answer|option|choice)\**\s*(?:(?i:is)\s*)?[:\-]?\s*(?:(?i:option)\s*)?"
            rf"\**[\(\[]?\**({upper})\**[\)\]]?(?![\w])"
        )
        self._paren = re.compile(rf"[\(\[]({cls})[\)\]]")
        self._line = re.compile(rf"^\s*\**\s*[\(\[]?({cls})[\)\]]?[.:]?\s*\**\s*$", re.MULTILINE)

    def find(self, text: str) -> str | None:
        for pattern in (self._explicit, self._paren, self._line):
            found = pattern.findall(text)
            if found:
                return str(found[-1]).upper()
        return None

    def __repr__(self) -> str:
        return f"choice({self.letters!r})"


class whole(_TextExtractor):
    """The whole text, :func:`normalize`\\ d (for samples that return just the answer)."""

    def find(self, text: str) -> str | None:
        return normalize(text)

    def __repr__(self) -> str:
        return "whole()"


def math_answer() -> Extractor:
    """The default extractor: ``boxed() | final_answer(numeric=True) | last_number()``."""
    return first_of(boxed(), final_answer(numeric=True), last_number())


def extract_all(extract: Extractor, values: Iterable[Any]) -> list[str | None]:
    """``extract`` applied to each value (a convenience for tests and notebooks)."""
    return [extract(v) for v in values]
