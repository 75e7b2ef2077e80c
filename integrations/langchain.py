"""LangChain: a budgeting callback handler and LCEL runnables.

Agent pipelines built on LangChain get the whole SDK without rewriting them::

    from tcc_plugin.integrations.langchain import (
        TCCCallbackHandler, BudgetRunnable, RetryRunnable, SelfConsistencyRunnable,
    )

    chain.invoke(question, config={"callbacks": [TCCCallbackHandler()]})  # traced, budgeted
    agent = with_budget(plan | with_self_consistency(solve, n=8) | check, usd=0.50)

- :class:`TCCCallbackHandler` (contract): budgets, prices and traces every chat model
  and LLM call it sees through the core lifecycle; :func:`use_handler` attaches it to
  every call of a block.
- :class:`BudgetRunnable`, :class:`RetryRunnable`, :class:`BestOfNRunnable`,
  :class:`SelfConsistencyRunnable` (contract): a budget scope, the core's retry policy
  (with the SDKs' own retries off), best-of-N with a verifier and self-consistency
  voting around any runnable; they compose with ``|``. One-liners: :func:`with_budget`,
  :func:`with_retries`, :func:`with_best_of_n`, :func:`with_self_consistency`.

Needs the ``langchain`` extra: ``pip install 'tcc-plugin[langchain]'``. See
``docs/langchain.md``.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "tcc_plugin.integrations.langchain needs langchain-core: "
        "pip install 'tcc-plugin[langchain]'"
    ) from exc

from tcc_plugin.integrations.langchain_callbacks import (
    LangChainAdapter,
    LangChainRequest,
    TCCCallbackHandler,
    use_handler,
)
from tcc_plugin.integrations.langchain_routing import CascadeRunnable, RouterRunnable
from tcc_plugin.integrations.langchain_runnables import (
    BudgetRunnable,
    RetryRunnable,
    with_budget,
    with_retries,
    without_provider_retries,
)
from tcc_plugin.integrations.langchain_sampling import (
    BestOfNRunnable,
    SelfConsistencyRunnable,
    question_text,
    with_best_of_n,
    with_self_consistency,
)

__all__ = [
    "BestOfNRunnable",
    "BudgetRunnable",
    "CascadeRunnable",
    "LangChainAdapter",
    "LangChainRequest",
    "RetryRunnable",
    "RouterRunnable",
    "SelfConsistencyRunnable",
    "TCCCallbackHandler",
    "question_text",
    "use_handler",
    "with_best_of_n",
    "with_budget",
    "with_retries",
    "with_self_consistency",
    "without_provider_retries",
]
