"""The policy file: a sweep's recommendation, ready to configure production calls.

>>> policy = tcc_plugin.load_policy("policy.json")        # doctest: +SKIP
>>> with policy.apply():                                  # thinking budget + per-call budget
...     reply = client.chat.completions.create(...)
>>> result = policy.run(lambda: ask(question), verifier=...)   # the method, N, stop rule

The file is JSON (TOML is read too): ``method``, ``thinking_budget``, ``n``, ``stop``,
``min_thinking_tokens``, ``per_call`` (limits of a :class:`~tcc_plugin.Budget` for one
call), ``source`` (where it came from: sweep, cell, accuracy, cost) and an optional
``router`` section kept as is for routing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tcc_plugin.budget import LIMITS, Budget
from tcc_plugin.instrument import check_thinking, thinking
from tcc_plugin.sampling.stopping import StopRule
from tcc_plugin.sweep.grid import Cell, Method, parse_stop

__all__ = ["POLICY_VERSION", "Policy", "PolicyError", "load_policy", "policy_from_analysis"]

POLICY_VERSION = 1
HEADROOM = 1.5
"""The per-call budget a sweep writes is this times the most one question spent."""


class PolicyError(ValueError):
    """A policy file that cannot be read or does not describe a valid policy."""


@dataclass(frozen=True)
class Policy:
    """How to answer: a method with its thinking budget, N and stop rule, and a
    per-call budget. ``router`` is an opaque section for routing, preserved."""

    method: Method
    thinking_budget: int | str | None = None
    n: int | None = None
    stop: str | None = None
    min_thinking_tokens: int | None = None
    per_call: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    router: dict[str, Any] | None = None
    version: int = POLICY_VERSION

    def __post_init__(self) -> None:
        self.cell  # noqa: B018 - validates method, budget, n and stop
        unknown = set(self.per_call) - set(LIMITS) - {"deadline"}
        if unknown:
            raise PolicyError(f"per_call: unknown limit(s) {', '.join(sorted(unknown))}")

    @property
    def cell(self) -> Cell:
        """The grid cell this policy runs."""
        try:
            return Cell(self.method, self.thinking_budget, self.n, self.stop,
                        self.min_thinking_tokens)  # fmt: skip
        except ValueError as exc:
            raise PolicyError(str(exc)) from None

    def stop_rule(self) -> StopRule | None:
        return parse_stop(self.stop)

    def budget(self) -> Budget | None:
        """A fresh :class:`~tcc_plugin.Budget` with the per-call limits (``None``: none)."""
        if not self.per_call:
            return None
        return Budget(name=f"policy {self.cell.id}", **dict(self.per_call))

    @contextmanager
    def apply(self) -> Iterator[Budget | None]:
        """Calls inside the block get the policy's thinking budget (instrumented
        clients map it to their provider's knob) and one per-call budget, nested in
        the caller's budgets. Yields that budget."""
        with ExitStack() as stack:
            if self.thinking_budget is not None:
                stack.enter_context(thinking(check_thinking(self.thinking_budget)))
            scope = self.budget()
            if scope is not None:
                stack.enter_context(scope)
            yield scope

    def run(
        self,
        sample: Callable[[], Any],
        *,
        verifier: Any = None,
        extract: Any = None,
        continuer: Any = None,
        prompt: str | None = None,
    ) -> Any:
        """Answer once with the policy's method, inside :meth:`apply`: ``single`` calls
        ``sample()``; ``best_of_n`` / ``self_consistency`` draw ``n`` samples with the
        stop rule (best-of-N needs ``verifier``); ``forcing`` runs
        :func:`~tcc_plugin.budget_forcing` of ``prompt`` on ``continuer``."""
        from tcc_plugin.forcing import budget_forcing
        from tcc_plugin.sampling.api import best_of_n, self_consistency

        stop = self.stop_rule()
        with self.apply():
            if self.method == "single":
                return sample()
            if self.method == "forcing":
                if continuer is None or prompt is None:
                    raise TypeError("a forcing policy needs continuer= and prompt=")
                assert isinstance(self.thinking_budget, int)
                return budget_forcing(
                    continuer,
                    prompt,
                    max_thinking_tokens=self.thinking_budget,
                    min_thinking_tokens=self.min_thinking_tokens or 0,
                )
            assert self.n is not None
            if self.method == "best_of_n":
                if verifier is None:
                    raise TypeError("a best_of_n policy needs verifier=")
                return best_of_n(sample, self.n, verifier=verifier, stop=stop, extract=extract)
            kwargs: dict[str, Any] = {} if stop is None else {"stop": stop}
            return self_consistency(sample, self.n, extract=extract, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_call"] = dict(self.per_call)
        data["source"] = dict(self.source)
        if self.router is None:
            del data["router"]
        return data

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the policy as JSON."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return target

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        if not isinstance(data, Mapping):
            raise PolicyError("a policy is a JSON object")
        known = {"method", "thinking_budget", "n", "stop", "min_thinking_tokens", "per_call",
                 "source", "router", "version"}  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"unknown field(s) {', '.join(sorted(unknown))}")
        if "method" not in data:
            raise PolicyError("missing field 'method'")
        version = data.get("version", POLICY_VERSION)
        if version != POLICY_VERSION:
            raise PolicyError(f"policy version {version!r} is not supported (expected 1)")
        router = data.get("router")
        if router is not None and not isinstance(router, Mapping):
            raise PolicyError("'router' must be an object")
        for key in ("per_call", "source"):
            if not isinstance(data.get(key, {}), Mapping):
                raise PolicyError(f"'{key}' must be an object")
        return cls(
            method=data["method"],
            thinking_budget=data.get("thinking_budget"),
            n=data.get("n"),
            stop=data.get("stop"),
            min_thinking_tokens=data.get("min_thinking_tokens"),
            per_call=dict(data.get("per_call") or {}),
            source=dict(data.get("source") or {}),
            router=None if router is None else dict(router),
        )


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read a policy file (JSON, or TOML by its ``.toml`` suffix). Raises
    :class:`PolicyError` naming the file for anything invalid."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
        if source.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise PolicyError(f"{source}: reading TOML needs Python 3.11+") from None
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
        return Policy.from_dict(data)
    except (OSError, ValueError) as exc:
        if isinstance(exc, PolicyError) and str(exc).startswith(str(source)):
            raise
        raise PolicyError(f"{source}: {exc}") from None


def _ceil_usd(value: float) -> str:
    # whole micro-dollars, rounded up: the limit never falls below what was measured
    return f"{math.ceil(value * 1e6) / 1e6:.6f}"


def policy_from_analysis(
    analysis: Any, rows: Iterable[Mapping[str, Any]], cell_id: str | None = None
) -> Policy:
    """The policy of ``cell_id`` (default: the analysis's recommended cell), with a
    per-call budget of :data:`HEADROOM` times the most one of its questions spent."""
    chosen = cell_id or analysis.recommended or analysis.sweet_spot
    if chosen is None:
        raise PolicyError("no cell to recommend (no cell meets the constraints)")
    stats = analysis.cell(chosen)
    mine = [r for r in rows if r["cell_id"] == chosen and not r.get("refused")]
    per_call: dict[str, Any] = {}
    outputs = [int(r["output_tokens"] or 0) for r in mine]
    if outputs and max(outputs) > 0:
        per_call["output_tokens"] = math.ceil(max(outputs) * HEADROOM)
    costs = [r["cost_usd"] for r in mine]
    if costs and all(c is not None for c in costs) and max(costs) > 0:
        per_call["usd"] = _ceil_usd(max(costs) * HEADROOM)
    cell = stats.cell
    return Policy(
        method=cell.method,
        thinking_budget=cell.thinking_budget,
        n=cell.n,
        stop=cell.stop,
        min_thinking_tokens=cell.min_thinking_tokens,
        per_call=per_call,
        source={
            "sweep": analysis.sweep,
            "cell_id": chosen,
            "accuracy": stats.accuracy,
            "accuracy_ci95": [stats.ci_low, stats.ci_high],
            "cost_usd_per_question": stats.cost_usd,
            "latency_p95_s": stats.latency_p95,
            "questions": stats.answered,
            "constraints": dict(analysis.constraints),
            "test": analysis.test,
        },
    )
