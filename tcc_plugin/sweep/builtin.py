"""The built-in eval sets, generated deterministically (no download, no data file).

- ``arithmetic``: word problems at five levels of difficulty (1: one operation on small
  numbers ... 5: four chained operations with larger numbers); the answer is computed
  alongside the text, so it is right by construction.
- ``code``: small Python functions to write, each with unit tests produced by a
  reference solution (kept in ``meta["reference"]``; a test runs every reference
  against its tests through the code verifier).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from tcc_plugin.sweep.evalset import EvalSet, Question

__all__ = ["BUILTIN", "arithmetic", "builtin", "code_tasks"]

_NAMES = ("Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goro", "Hana", "Ivo", "Jun")
_ITEMS = ("apples", "marbles", "stamps", "coins", "books", "shells", "pencils", "cards")


def _problem(rng: random.Random, level: int) -> tuple[str, int]:
    """A word problem with ``level`` operations and its integer answer."""
    who, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    top = 10 * 10 ** min(level, 3) // 10 + 10 * level
    total = rng.randint(2 + level, top)
    parts = [f"{who} has {total} {item}."]
    for _ in range(level):
        op = rng.choice(("add", "sub", "mul", "div") if level >= 3 else ("add", "sub", "mul"))
        if op == "add":
            k = rng.randint(2, top)
            parts.append(f"Then {who} finds {k} more.")
            total += k
        elif op == "sub" and total > 2:
            k = rng.randint(1, total - 1)
            parts.append(f"Then {who} gives away {k}.")
            total -= k
        elif op == "mul" and total <= 500:
            k = rng.randint(2, 4 if level < 4 else 7)
            parts.append(f"Then the number of {item} grows {k} times over.")
            total *= k
        else:
            divisors = [d for d in (2, 3, 4, 5) if total % d == 0]
            if divisors:
                k = rng.choice(divisors)
                parts.append(
                    f"Then {who} shares them equally among {k} friends, keeping one share."
                )
                total //= k
            else:
                k = rng.randint(2, 9)
                parts.append(f"Then {who} buys {k} more.")
                total += k
    parts.append(f"How many {item} does {who} have now? Give the final answer as a number.")
    return " ".join(parts), total


def arithmetic(per_level: int = 8, *, seed: int = 16) -> EvalSet:
    """``per_level`` word problems at each of five levels (ids ``arith-L<level>-<k>``),
    the same every time for the same arguments."""
    rng = random.Random(seed)
    questions = []
    for level in range(1, 6):
        for k in range(per_level):
            text, answer = _problem(rng, level)
            questions.append(
                Question(f"arith-L{level}-{k:02d}", text, answer, meta={"level": level})
            )
    return EvalSet("arithmetic", tuple(questions))


# -- code tasks: (name, signature, description, reference source, argument generator) --------
_Gen = Callable[[random.Random], tuple[Any, ...]]


def _ints(rng: random.Random, n: int = 6) -> list[int]:
    return [rng.randint(-20, 20) for _ in range(rng.randint(0, n))]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcde") for _ in range(rng.randint(0, 7)))


_TASKS: tuple[tuple[str, str, str, str, _Gen], ...] = (
    (
        "sum_multiples", "xs, k",
        "returns the sum of the elements of the list xs that are multiples of k",
        """def sum_multiples(xs, k):
    return sum(x for x in xs if x % k == 0)
""",
        lambda r: (_ints(r), r.randint(2, 5)),
    ),
    (
        "count_vowels", "s",
        "returns how many characters of the string s are vowels (a, e, i, o, u)",
        """def count_vowels(s):
    return sum(c in 'aeiou' for c in s)
""",
        lambda r: (_word(r),),
    ),
    (
        "second_largest", "xs",
        "returns the second largest distinct value of the list xs, or None if there is none",
        """def second_largest(xs):
    v = sorted(set(xs))
    return v[-2] if len(v) > 1 else None
""",
        lambda r: (_ints(r),),
    ),
    (
        "running_max", "xs",
        "returns the list of running maxima of xs (element i is max(xs[:i+1]))",
        """def running_max(xs):
    out = []
    for x in xs:
        out.append(x if not out else max(out[-1], x))
    return out
""",
        lambda r: (_ints(r),),
    ),
    (
        "is_palindrome", "s",
        "returns True if the string s reads the same backwards, else False",
        """def is_palindrome(s):
    return s == s[::-1]
""",
        lambda r: (r.choice([_word(r), "abba", "abcba"]),),
    ),
    (
        "digit_sum", "n",
        "returns the sum of the decimal digits of the absolute value of the int n",
        """def digit_sum(n):
    return sum(int(d) for d in str(abs(n)))
""",
        lambda r: (r.randint(-99999, 99999),),
    ),
    (
        "dedupe", "xs",
        "returns xs without repeated elements, keeping each first occurrence, in order",
        """def dedupe(xs):
    seen = set()
    out = []
    for x in xs:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out
""",
        lambda r: ([r.randint(0, 4) for _ in range(r.randint(0, 8))],),
    ),
    (
        "clamp", "x, lo, hi",
        "returns x limited to the range [lo, hi]",
        """def clamp(x, lo, hi):
    return max(lo, min(hi, x))
""",
        lambda r: (r.randint(-30, 30), -10, r.randint(0, 10)),
    ),
    (
        "count_words", "s",
        "returns the number of whitespace-separated words in the string s",
        """def count_words(s):
    return len(s.split())
""",
        lambda r: (" ".join(_word(r) for _ in range(r.randint(0, 4))),),
    ),
    (
        "product", "xs",
        "returns the product of the elements of xs (1 for an empty list)",
        """def product(xs):
    p = 1
    for x in xs:
        p *= x
    return p
""",
        lambda r: ([r.randint(-5, 5) for _ in range(r.randint(0, 5))],),
    ),
    (
        "rotate_left", "xs, k",
        "returns xs rotated left by k positions (k may exceed len(xs); [] stays [])",
        """def rotate_left(xs, k):
    if not xs:
        return []
    k %= len(xs)
    return xs[k:] + xs[:k]
""",
        lambda r: (_ints(r), r.randint(0, 9)),
    ),
    (
        "fizzbuzz_count", "n",
        "returns how many integers from 1 to n inclusive are divisible by 3 or by 5",
        """def fizzbuzz_count(n):
    return sum(1 for i in range(1, n + 1) if i % 3 == 0 or i % 5 == 0)
""",
        lambda r: (r.randint(0, 100),),
    ),
)  # fmt: skip


def _case(name: str, args: tuple[Any, ...], reference: str) -> str:
    namespace: dict[str, Any] = {}
    exec(reference, namespace)  # our own reference solution, to compute the expected value
    expected = namespace[name](*args)
    return f"assert {name}({', '.join(repr(a) for a in args)}) == {expected!r}"


def code_tasks(variants: int = 2, *, seed: int = 16, tests_per_task: int = 4) -> EvalSet:
    """Each of the built-in function tasks ``variants`` times (different tests), ids
    ``code-<name>-<k>``; the answer is the reference solution."""
    rng = random.Random(seed)
    questions = []
    for k in range(variants):
        for name, signature, description, reference, gen in _TASKS:
            tests = tuple(_case(name, gen(rng), reference) for _ in range(tests_per_task))
            text = (
                f"Write a Python function `{name}({signature})` that {description}. "
                "Reply with the code in one ```python block."
            )
            questions.append(
                Question(f"code-{name}-{k}", text, reference, tests, {"reference": reference})
            )
    return EvalSet("code", tuple(questions))


BUILTIN: dict[str, Callable[[], EvalSet]] = {"arithmetic": arithmetic, "code": code_tasks}


def builtin(name: str) -> EvalSet:
    """A built-in eval set by name (``arithmetic`` or ``code``)."""
    try:
        return BUILTIN[name]()
    except KeyError:
        raise ValueError(
            f"unknown built-in eval set {name!r}; choose from {', '.join(BUILTIN)}"
        ) from None
