"""The public names of tcc_plugin.integrations.langchain, pinned."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core")


def test_public_names() -> None:
    from tcc_plugin.integrations import langchain

    assert sorted(langchain.__all__) == [
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
    for name in langchain.__all__:
        assert getattr(langchain, name).__module__.startswith("tcc_plugin.integrations.langchain")


def test_runnables_compose_with_pipe() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnableSequence

    from tcc_plugin import RetryPolicy
    from tcc_plugin.integrations.langchain import (
        BudgetRunnable,
        RetryRunnable,
        SelfConsistencyRunnable,
        with_budget,
    )

    model = FakeListChatModel(responses=["Final Answer: 7"] * 5)
    chain = (
        RetryRunnable(bound=model, policy=RetryPolicy(max_attempts=2))
        | StrOutputParser()
        | (lambda text: text.upper())
    )
    assert isinstance(chain, RunnableSequence)
    assert chain.invoke("q") == "FINAL ANSWER: 7"
    voted = with_budget(SelfConsistencyRunnable(bound=model, n=3, output="answer"), calls=3)
    assert isinstance(voted, BudgetRunnable)
    assert voted.invoke("q") == "7"
