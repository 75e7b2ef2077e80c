"""LCEL runnables over the core's sampling: best-of-N and self-consistency.

Each invocation is one sampling group of :func:`tcc_plugin.best_of_n` /
:func:`tcc_plugin.self_consistency` (their async twins for ``ainvoke``): the wrapped
runnable is invoked up to ``n`` times on the same input, concurrently, each sample a
child run (tagged ``sample:<index>``) whose model calls are children of the group's
span and charged to the active budgets. Extraction, verification, voting, early stop
and budget admission are the sampling module's; nothing is reimplemented here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.runnables.utils import Input, Output
from pydantic import Field

from tcc_plugin.budget import Charge, Demand
from tcc_plugin.integrations.langchain_callbacks import ending_calls_on_error, use_handler
from tcc_plugin.integrations.langchain_runnables import _Wrapper
from tcc_plugin.sampling import (
    SamplingResult,
    abest_of_n,
    aself_consistency,
    best_of_n,
    current_sample,
    llm_judge,
    self_consistency,
    text_of,
)
from tcc_plugin.sampling.verifiers import JUDGE_TEMPLATE

__all__ = [
    "BestOfNRunnable",
    "SelfConsistencyRunnable",
    "with_best_of_n",
    "with_self_consistency",
]

Output_ = Literal["value", "answer", "result"]


def question_text(value: Any) -> str:
    """The question a judge is shown for a runnable's input: a string as is; a prompt
    value's text; a mapping's ``"question"`` (or ``"input"``) entry; the last message."""
    if isinstance(value, str):
        return value
    if isinstance(value, PromptValue):
        return value.to_string()
    if isinstance(value, Mapping):
        for key in ("question", "input", "query"):
            if key in value:
                return question_text(value[key])
        return "\n".join(f"{k}: {question_text(v)}" for k, v in value.items())
    if isinstance(value, Sequence) and value:
        return question_text(value[-1])
    text = text_of(value)
    return text if text is not None else str(value)


class _Sampling(_Wrapper[Input, Any]):
    """What both sampling runnables share: the group's options and the sample calls."""

    n: int
    verifier: Any = None
    """A verifier (:class:`~tcc_plugin.sampling.Verifier` or ``candidate -> score``), or
    a LangChain runnable used as an LLM judge (:func:`~tcc_plugin.sampling.llm_judge`
    shown the input's question and ``judge_template``)."""
    extract: Any = None
    stop: Any = None
    launch: Any = None
    """A launch policy (:class:`~tcc_plugin.sampling.LaunchPolicy`); default
    :data:`~tcc_plugin.sampling.api.DEFAULT_LAUNCH`."""
    concurrency: int | None = None
    per_sample: Demand | Charge | None = None
    timeout: float | None = None
    group_name: str | None = None
    judge_template: str = JUDGE_TEMPLATE
    output: Output_ = "value"

    def _child(self, config: RunnableConfig, run_manager: Any, tag: str | None) -> RunnableConfig:
        return patch_config(config, callbacks=run_manager.get_child(tag))

    def _options(
        self, input: Any, config: RunnableConfig, run_manager: Any, *, is_async: bool
    ) -> dict[str, Any]:
        options: dict[str, Any] = {
            "concurrency": self.concurrency or config.get("max_concurrency"),
            "per_sample": self.per_sample,
            "timeout": self.timeout,
            "name": self.group_name,
            "launch": self.launch,
        }
        if self.extract is not None:
            options["extract"] = self.extract
        if self.verifier is not None:
            options["verifier"] = self._verifier(input, config, run_manager, is_async=is_async)
        if "stop" in self.model_fields_set:
            options["stop"] = self.stop
        return options

    def _verifier(
        self, input: Any, config: RunnableConfig, run_manager: Any, *, is_async: bool
    ) -> Any:
        judge = self.verifier
        if not isinstance(judge, Runnable):
            return judge
        judge_config = self._child(config, run_manager, "judge")
        question = question_text(input)
        if is_async:

            async def ask_async(prompt: str) -> Any:
                return await judge.ainvoke(prompt, judge_config)

            return llm_judge(ask_async, question=question, template=self.judge_template)

        def ask(prompt: str) -> Any:
            return judge.invoke(prompt, judge_config)

        return llm_judge(ask, question=question, template=self.judge_template)

    def _sample_tag(self) -> str | None:
        current = current_sample()
        return None if current is None else f"sample:{current.index}"

    def _outcome(self, result: SamplingResult[Any]) -> Any:
        if self.output == "result":
            return result
        if self.output == "answer":
            if result.winner is None:
                result.value  # noqa: B018 - raises the LookupError that explains why
            return result.answer
        return result.value

    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def _invoke(
        self,
        input: Input,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        def sample() -> Any:
            return self.bound.invoke(
                input, self._child(config, run_manager, self._sample_tag()), **kwargs
            )

        with use_handler():
            options = self._options(input, config, run_manager, is_async=False)
            return self._outcome(self._run(sample, options))

    async def _ainvoke(
        self,
        input: Input,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        async def sample() -> Any:
            # A sample cancelled by an early stop ends its calls at once.
            with ending_calls_on_error():
                return await self.bound.ainvoke(
                    input, self._child(config, run_manager, self._sample_tag()), **kwargs
                )

        with use_handler():
            options = self._options(input, config, run_manager, is_async=True)
            return self._outcome(await self._arun(sample, options))

    def _run(self, sample: Any, options: dict[str, Any]) -> SamplingResult[Any]:
        raise NotImplementedError

    async def _arun(self, sample: Any, options: dict[str, Any]) -> SamplingResult[Any]:
        raise NotImplementedError


class BestOfNRunnable(_Sampling[Input]):
    """Invokes ``bound`` up to ``n`` times on the input and returns the output the
    ``verifier`` scores highest (:func:`tcc_plugin.best_of_n`).

    ``output="result"`` returns the whole :class:`~tcc_plugin.sampling.SamplingResult`
    instead (candidates, scores, counts). ``stream`` yields the winner once, when the
    group is done. ``stop=stop_on_score(1.0)`` stops at the first full pass;
    ``per_sample`` (e.g. :func:`~tcc_plugin.sampling.worst_case`) makes each sample
    launch only once its worst case is reserved."""

    verifier: Any = Field(...)

    def _run(self, sample: Any, options: dict[str, Any]) -> SamplingResult[Any]:
        return best_of_n(sample, self.n, **options)

    async def _arun(self, sample: Any, options: dict[str, Any]) -> SamplingResult[Any]:
        return await abest_of_n(sample, self.n, **options)


class SelfConsistencyRunnable(_Sampling[Input]):
    """Invokes ``bound`` up to ``n`` times on the input and returns the output whose
    answer most samples agree on (:func:`tcc_plugin.self_consistency`).

    ``extract`` finds each sample's answer (default: ``\\boxed{}``, a "Final Answer:"
    line, else the last number), ``vote`` weighs them (default majority), ``stop`` ends
    the group early (default: once the leader cannot be overtaken). ``output`` is the
    winning sample's output (``"value"``, default), its normalised answer
    (``"answer"``, a string) or the :class:`~tcc_plugin.sampling.SamplingResult`."""

    vote: Any = None

    def _options(
        self, input: Any, config: RunnableConfig, run_manager: Any, *, is_async: bool
    ) -> dict[str, Any]:
        options = super()._options(input, config, run_manager, is_async=is_async)
        if self.vote is not None:
            options["vote"] = self.vote
        return options

    def _run(self, sample: Any, options: dict[str, Any]) -> SamplingResult[Any]:
        return self_consistency(sample, self.n, **options)

    async def _arun(self, sample: Any, options: dict[str, Any]) -> SamplingResult[Any]:
        return await aself_consistency(sample, self.n, **options)


def with_best_of_n(
    runnable: Runnable[Input, Output], n: int, verifier: Any, **options: Any
) -> BestOfNRunnable[Input]:
    """``BestOfNRunnable(bound=runnable, n=n, verifier=verifier, **options)``."""
    return BestOfNRunnable(bound=runnable, n=n, verifier=verifier, **options)


def with_self_consistency(
    runnable: Runnable[Input, Output], n: int, **options: Any
) -> SelfConsistencyRunnable[Input]:
    """``SelfConsistencyRunnable(bound=runnable, n=n, **options)``."""
    return SelfConsistencyRunnable(bound=runnable, n=n, **options)
