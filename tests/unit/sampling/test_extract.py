"""Answer extraction and normalisation."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcc_plugin.sampling import (
    boxed,
    choice,
    final_answer,
    first_of,
    last_number,
    math_answer,
    normalize,
    normalize_number,
    normalize_text,
    text_of,
    whole,
)
from tcc_plugin.sampling.extract import as_extractor

from .conftest import chat_body


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1,000", "1000"),
        ("1000", "1000"),
        ("1000.0", "1000"),
        ("1000.", "1000"),
        ("$1,000", "1000"),
        ("  1 000 ", "1000"),
        ("-3", "-3"),
        ("\u22123", "-3"),
        ("-$5", "-5"),
        ("+7", "7"),
        ("0.5", "0.5"),
        (".50", "0.5"),
        ("1/2", "0.5"),
        ("2/4", "0.5"),
        ("\\frac{1}{2}", "0.5"),
        ("\\dfrac{10}{4}", "2.5"),
        ("-\\frac{3}{4}", "-0.75"),
        ("1/3", "1/3"),
        ("2/6", "1/3"),
        ("(1)/(3)", "1/3"),
        ("50%", "50"),
        ("-0.0", "0"),
        ("(3)", "3"),
        ("1,000.25", "1000.25"),
    ],
)
def test_numbers_have_one_spelling(text: str, canonical: str) -> None:
    assert normalize_number(text) == canonical


@pytest.mark.parametrize("text", ["abc", "1,5", "12,34", "1/0", "1e3", "", "3 apples", "1.2.3"])
def test_non_numbers_are_not_numbers(text: str) -> None:
    assert normalize_number(text) is None


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integer_spellings_agree(k: int) -> None:
    assert normalize_number(f"{k:,}") == normalize_number(str(k)) == normalize_number(f"{k}.0")
    assert normalize_number(f"{k:,}") == str(k)


@given(
    st.integers(min_value=-10_000, max_value=10_000),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=0, max_value=6),
)
def test_terminating_fractions_equal_their_decimals(p: int, twos: int, fives: int) -> None:
    q = 2**twos * 5**fives
    value = Fraction(p, q)
    decimal = f"{p / q:.{twos + fives}f}"
    assert normalize_number(f"{p}/{q}") == normalize_number(decimal)
    assert Fraction(normalize_number(decimal) or "nan") == value


@given(st.integers(min_value=1, max_value=999), st.integers(min_value=1, max_value=999))
def test_fractions_reduce(p: int, q: int) -> None:
    value = Fraction(p, q)
    assert normalize_number(f"{p * 3}/{q * 3}") == normalize_number(f"{p}/{q}")
    spelled = normalize_number(f"{p}/{q}")
    assert spelled is not None and Fraction(spelled) == value


def test_text_normalisation() -> None:
    assert normalize_text("  **Paris.** ") == "paris"
    assert normalize_text("The  Eiffel\nTower") == "the eiffel tower"
    assert normalize_text('"yes"') == "yes"
    assert normalize_text("**") is None
    assert normalize("1,000") == "1000" and normalize(" Blue ") == "blue"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So the total is 1,000 apples.", "1000"),
        ("x=3, y=4, so the area is 12.", "12"),
        ("The temperature drops to -5 degrees.", "-5"),
        ("5-3=2", "2"),
        ("the list 1,2,3", "3"),
        ("a half: 1/2", "0.5"),
        ("It costs $18.50 per day.", "18.5"),
        ("no digits here", None),
    ],
)
def test_last_number(text: str, answer: str | None) -> None:
    assert last_number()(text) == answer


def test_boxed_takes_the_last_box_with_nested_braces() -> None:
    box = boxed()
    assert box("first \\boxed{3} then \\boxed{\\frac{1}{2}}") == "0.5"
    assert box("$\\boxed{x^{2} + 1}$") == "x^{2} + 1"
    assert box("\\boxed{\\text{Paris}}") == "paris"
    assert box("\\fbox{12}") == "12"
    assert box("\\boxed 7.") == "7"
    assert box("\\boxed{unclosed") is None
    assert box("no box") is None


def test_final_answer_line() -> None:
    fa = final_answer()
    assert fa("work...\nFinal Answer: 42") == "42"
    assert fa("**Final Answer:** The Eiffel Tower.") == "the eiffel tower"
    assert fa("The final answer is $1,000.") == "1000"
    assert fa("Final answer: \\boxed{7}, I think") == "7"
    assert fa("nothing final here") is None
    assert final_answer(numeric=True)("Final Answer: 42 apples") == "42"
    assert final_answer(numeric=True)("Final Answer: none") is None
    assert final_answer("answer")("Answer: B") == "b"


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("The answer is (B).", "B"),
        ("A is tempting, but... Answer: C", "C"),
        ("**D**", "D"),
        ("Option b looks right. (b)", "B"),
        ("B", "B"),
        ("I first thought (A), but it is (C)", "C"),
        ("So the answer is B because of X.", "B"),
        ("Nothing to choose", None),
        ("The answer is (E).", None),  # not among the letters
    ],
)
def test_choice(text: str, letter: str | None) -> None:
    assert choice()(text) == letter


def test_choice_letters_are_configurable() -> None:
    assert choice("ABCDE")("The answer is (E).") == "E"
    with pytest.raises(ValueError):
        choice("1")


def test_extractors_chain_and_flatten() -> None:
    chain = boxed() | final_answer() | last_number()
    assert chain("\\boxed{5} and 7") == "5"
    assert chain("Final Answer: 6\nthen 7") == "6"
    assert chain("just 7") == "7"
    assert chain("nothing") is None
    assert isinstance(chain, first_of) and len(chain.extractors) == 3
    assert "boxed() | final_answer" in repr(chain)
    mixed = (lambda v: "x" if "x" in v else None) | last_number()
    assert mixed("x 1") == "x" and mixed("2") == "2"


def test_user_extractor_must_return_str() -> None:
    bad = as_extractor(lambda v: 3)
    with pytest.raises(TypeError, match="str or None"):
        bad("anything")


def test_math_answer_defaults() -> None:
    ma = math_answer()
    assert ma("... \\boxed{\\dfrac{3}{6}}") == "0.5"
    assert ma("Final Answer: 1,000 dollars\n(checked 3 times)") == "1000"
    assert ma("I think it is 12") == "12"
    assert whole()("  Paris ") == "paris"


def test_text_of_reads_every_shape() -> None:
    assert text_of("plain") == "plain"
    assert text_of(42) == "42"
    assert text_of(None) is None and text_of(True) is None
    # OpenAI chat completion: dict and SDK object
    assert text_of(chat_body("the answer is 4")) == "the answer is 4"
    openai = pytest.importorskip("openai")
    completion = openai.types.chat.ChatCompletion.model_validate(chat_body("sdk says 4"))
    assert text_of(completion) == "sdk says 4"
    # legacy completion
    assert text_of({"choices": [{"text": "legacy 5", "index": 0}]}) == "legacy 5"
    # OpenAI Responses: the SDK property, and the JSON output items
    assert text_of(SimpleNamespace(output_text="resp 6")) == "resp 6"
    responses_json: dict[str, Any] = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "resp 7"}]},
        ]
    }
    assert text_of(responses_json) == "resp 7"


def test_text_of_skips_thinking_blocks() -> None:
    anthropic = pytest.importorskip("anthropic")
    message = anthropic.types.Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm, 99?", "signature": "sig"},
                {"type": "text", "text": "It is 8."},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 9},
        }
    )
    assert text_of(message) == "It is 8."
    assert last_number()(message) == "8"


def test_text_of_langchain_message() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    assert text_of(messages.AIMessage(content="lc 9")) == "lc 9"
    blocks = messages.AIMessage(
        content=[{"type": "text", "text": "lc "}, {"type": "text", "text": "10"}]
    )
    assert text_of(blocks) == "lc 10"


def test_unreadable_values_abstain() -> None:
    assert text_of(object()) is None
    assert math_answer()(object()) is None
    assert text_of({"choices": [{"message": {"content": None, "tool_calls": []}}]}) is None
