"""``instrument(client)``: every call of a provider client budgeted, priced and traced.

:func:`instrument` dispatches on the client's package (``openai``, ``anthropic``) to the
integration registered for it. Integrations register themselves: the installed ones
through the ``tcc_plugin.integrations`` entry-point group (loaded only when a client of
that package is instrumented, so importing :mod:`tcc_plugin` imports no provider SDK),
others with :func:`register_integration`. The core never names an integration.

A provider-neutral *thinking budget* is either a number of tokens or an effort level
(:data:`Effort`). Each integration maps it to its provider's knob (OpenAI
``reasoning_effort`` / ``reasoning.effort``; Anthropic ``thinking.budget_tokens`` or
adaptive thinking with ``output_config.effort``). It is set for a client
(``instrument(client, thinking="low")``) or for a block of code
(``with thinking(8000): ...``, which wins over the client's), and never overrides a knob
the request sets itself.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, get_args

if TYPE_CHECKING:
    from tcc_plugin.pricing import PriceBook
    from tcc_plugin.retry import RetryPolicy

__all__ = [
    "EFFORTS",
    "EFFORT_TOKENS",
    "ENTRY_POINT_GROUP",
    "Effort",
    "Thinking",
    "check_thinking",
    "current_thinking",
    "instrument",
    "register_integration",
    "thinking",
]

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
"""Effort levels, from none to max (OpenAI's names; Anthropic's are a subset)."""

Thinking = int | Effort
"""A thinking budget: a number of tokens, or an effort level."""

EFFORTS: Final[tuple[Effort, ...]] = get_args(Effort)

EFFORT_TOKENS: Final[Mapping[str, int]] = {
    "none": 0,
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
    "max": 65536,
}
"""The thinking tokens an effort level stands for, where a provider wants a number
(Anthropic ``budget_tokens`` on models before Claude 4.6); read backwards (the largest
level at or below a number of tokens) where a provider wants a level."""

ClientT = TypeVar("ClientT")

ENTRY_POINT_GROUP: Final = "tcc_plugin.integrations"
"""The entry-point group integrations register in: the entry point's name is the root
package of the clients it instruments (``openai``), its value the integration's
``instrument(client, *, price_book, retry, thinking, **options)`` function."""

Instrumenter = Callable[..., Any]

_REGISTRY: dict[str, Instrumenter] = {}
_REGISTRY_LOCK = threading.Lock()

# Empty outside any thinking() block, else a 1-tuple holding the block's budget.
_SCOPE: contextvars.ContextVar[tuple[Thinking | None, ...]] = contextvars.ContextVar(
    "tcc_plugin_thinking", default=()
)


def check_thinking(value: object) -> Thinking | None:
    """``value`` if it is a valid thinking budget (or ``None``); else ``ValueError``."""
    if value is None:
        return None
    for level in EFFORTS:
        if value == level:
            return level
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(
        f"a thinking budget is a number of tokens (>= 0) or one of {', '.join(EFFORTS)}; "
        f"got {value!r}"
    )


@contextmanager
def thinking(budget: Thinking | None) -> Iterator[None]:
    """Give calls of instrumented clients inside the block this thinking budget.

    ``budget`` is a number of tokens or an effort level; ``None`` turns the client's
    default off for the block (requests keep whatever knob they set themselves).
    Scopes nest; the innermost wins. Follows threads started with a copied context and
    asyncio tasks, like budgets."""
    token = _SCOPE.set((check_thinking(budget),))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_thinking(default: Thinking | None = None) -> Thinking | None:
    """The thinking budget of the innermost :func:`thinking` block, else ``default``."""
    scoped = _SCOPE.get()
    return scoped[0] if scoped else default


def register_integration(package: str, instrument: Instrumenter) -> None:
    """Make :func:`instrument` hand clients whose classes come from the top-level
    package ``package`` to ``instrument`` (which wins over an entry point of that name)."""
    with _REGISTRY_LOCK:
        _REGISTRY[package] = instrument


def _from_entry_point(package: str) -> Instrumenter | None:
    for point in entry_points(group=ENTRY_POINT_GROUP, name=package):
        loaded = point.load()
        if not callable(loaded):
            raise TypeError(
                f"entry point {point.name} = {point.value} in group {ENTRY_POINT_GROUP} "
                "is not callable"
            )
        with _REGISTRY_LOCK:
            return _REGISTRY.setdefault(package, loaded)
    return None


def _integration_for(client: object) -> Instrumenter:
    roots = [(cls.__module__ or "").split(".", 1)[0] for cls in type(client).__mro__]
    for root in roots:
        found = _REGISTRY.get(root)
        if found is not None:
            return found
    for root in dict.fromkeys(roots):
        if root and root != "builtins":
            found = _from_entry_point(root)
            if found is not None:
                return found
    raise TypeError(
        f"tcc_plugin.instrument() supports openai.OpenAI / AsyncOpenAI and anthropic.Anthropic "
        f"/ AsyncAnthropic clients (and their subclasses); got {type(client).__qualname__}. "
        "Wrap other callables with @tcc_plugin.llm_call."
    )


def instrument(
    client: ClientT,
    *,
    price_book: PriceBook | None = None,
    retry: RetryPolicy | None = None,
    thinking: Thinking | None = None,
    provider_spans: bool = False,
    **options: Any,
) -> ClientT:
    """Instrument ``client`` in place and return it.

    Every chat completion, Responses API and legacy completion call of an OpenAI client,
    and every messages call of an Anthropic client (sync, async, streamed, and the SDKs'
    stream helpers), then goes through the tcc-plugin lifecycle: reserved against the
    active budgets (and clamped in ``clamp`` mode), traced with GenAI semantic-convention
    spans and metrics, priced from ``price_book`` (default: the process-wide book), and
    retried per ``retry`` (else a policy entered around the call), with the SDK's own
    retries turned off while ours run. ``thinking`` is the client's default thinking
    budget (tokens or an effort level). Copies made with ``client.with_options(...)``
    are instrumented alike. Calling it again replaces the settings.

    One provider call, one span with usage: a provider SDK's own span of the call
    (the Anthropic SDK's) is turned off for this client, and ours records what it had
    (the provider's request id, server address and port, ``error.type``);
    ``provider_spans=True`` keeps the SDK's span, nested under ours, without usage.

    ``options`` are the integration's own: an OpenAI client pointed at a self-hosted
    server takes ``server="vllm"`` / ``"llama.cpp"`` (else the dialect is detected at
    the first call) and ``gpu_price`` (USD per GPU-hour, shared among the calls in
    flight), and then reports exact reasoning tokens and GPU-hour cost.
    """
    integration = _integration_for(client)
    result: ClientT = integration(
        client,
        price_book=price_book,
        retry=retry,
        thinking=check_thinking(thinking),
        provider_spans=provider_spans,
        **options,
    )
    return result
