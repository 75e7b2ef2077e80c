"""LCEL runnables: a budget scope and a retry layer around any runnable.

Both compose with ``|``, support invoke/ainvoke/batch/abatch/stream/astream, hand their
``RunnableConfig`` down (as a child run of their own) and attach a
:class:`~tcc_plugin.integrations.langchain.TCCCallbackHandler` to the calls inside when
none is attached, so the model calls they wrap are budgeted and traced. Their work is
the core's: :class:`~tcc_plugin.Budget` scopes and :class:`~tcc_plugin.RetryPolicy`
decisions.

Context variables set here (the budget scope, the handler, the retry scope) are set
around each step of the wrapped runnable and reset before control returns to the
caller, so nothing leaks into the caller between the chunks of a stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from langchain_core.runnables.utils import Input, Output
from langchain_core.utils.pydantic import TypeBaseModel
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from tcc_plugin.budget import Budget
from tcc_plugin.integrations.langchain_callbacks import (
    RetryScope,
    ending_calls_on_error,
    retry_scope,
    use_handler,
)
from tcc_plugin.retry import RetryPolicy

__all__ = [
    "BudgetRunnable",
    "RetryRunnable",
    "with_budget",
    "with_retries",
    "without_provider_retries",
]

logger = logging.getLogger("tcc_plugin.integrations.langchain")

T = TypeVar("T")


# -- the shared shape ---------------------------------------------------------------------
class _Wrapper(RunnableSerializable[Input, Output]):
    """A runnable around ``bound`` that takes its input and output types."""

    bound: Runnable[Input, Output]

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @property
    def InputType(self) -> Any:
        return self.bound.InputType

    @property
    def OutputType(self) -> Any:
        return self.bound.OutputType

    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.bound.get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        return self.bound.get_output_schema(config)


def _each_step(scope: Callable[[], AbstractContextManager[Any]], it: Iterator[T]) -> Iterator[T]:
    """Yield what ``it`` yields, running each of its steps inside ``scope()``."""
    try:
        while True:
            with scope():
                try:
                    item = next(it)
                except StopIteration:
                    return
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            with scope():
                close()


async def _aeach_step(
    scope: Callable[[], AbstractContextManager[Any]], it: AsyncIterator[T]
) -> AsyncIterator[T]:
    """The async twin of :func:`_each_step`."""
    try:
        while True:
            with scope():
                try:
                    item = await anext(it)
                except StopAsyncIteration:
                    return
            yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with scope():
                await aclose()


# -- BudgetRunnable -----------------------------------------------------------------------
class BudgetRunnable(_Wrapper[Input, Output]):
    """Runs ``bound`` inside a budget scope: every model call it makes charges
    ``budget`` (and the budgets around the caller), across steps, threads and tasks.

    ``budget`` is a :class:`~tcc_plugin.Budget`, shared by every invocation (one ledger:
    what one invocation spends, the next cannot), or a zero-argument factory called
    once per invocation (a fresh budget for each input of a ``batch``). A call the
    budget cannot pay raises :class:`~tcc_plugin.BudgetExceeded` before it is sent.
    """

    budget: Budget | Callable[[], Budget]

    def _budget(self) -> Budget:
        chosen = self.budget if isinstance(self.budget, Budget) else self.budget()
        if not isinstance(chosen, Budget):
            raise TypeError(f"the budget factory returned {type(chosen).__name__}, not Budget")
        return chosen

    @contextmanager
    def _entered(self, scope: Budget) -> Iterator[None]:
        with scope, use_handler(), ending_calls_on_error():
            yield

    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Output:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    def _invoke(
        self,
        input: Input,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Output:
        with self._entered(self._budget()):
            return self.bound.invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Output:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    async def _ainvoke(
        self,
        input: Input,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Output:
        with self._entered(self._budget()):
            return await self.bound.ainvoke(input, config, **kwargs)

    def stream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Output]:
        return self.transform(iter([input]), config, **kwargs)

    def transform(
        self, input: Iterator[Input], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Output]:
        return self._transform_stream_with_config(input, self._transform, config, **kwargs)

    def _transform(
        self,
        input: Iterator[Input],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Output]:
        scope = self._budget()
        return _each_step(
            lambda: self._entered(scope), self.bound.transform(input, config, **kwargs)
        )

    def astream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Output]:
        async def once() -> AsyncIterator[Input]:
            yield input

        return self.atransform(once(), config, **kwargs)

    def atransform(
        self, input: AsyncIterator[Input], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Output]:
        return self._atransform_stream_with_config(input, self._atransform, config, **kwargs)

    def _atransform(
        self,
        input: AsyncIterator[Input],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Output]:
        scope = self._budget()
        return _aeach_step(
            lambda: self._entered(scope), self.bound.atransform(input, config, **kwargs)
        )


# -- RetryRunnable ------------------------------------------------------------------------
class RetryRunnable(_Wrapper[Input, Output]):
    """Retries ``bound`` with a :class:`~tcc_plugin.RetryPolicy`: only what is
    retryable (429, 408/409, 5xx, Anthropic 529, timeouts, connection errors), with
    backoff and ``Retry-After``, never past a budget's deadline, never a
    :class:`~tcc_plugin.BudgetExceeded`.

    The chat models inside ``bound`` (found through sequences, bindings, parallels and
    fallbacks) are copied with their SDK's own retries off (``max_retries=0``), so the
    two layers never multiply. A failed model call and its retry are one lifecycle call:
    one span with an event per attempt, counted once against a ``calls`` cap, each
    attempt's billed usage charged once. A stream is retried only until its first
    chunk; after that its error propagates.
    """

    policy: RetryPolicy = Field(default_factory=RetryPolicy)
    _quiet: Runnable[Input, Output] | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        self._quiet = without_provider_retries(self.bound)

    @property
    def quiet(self) -> Runnable[Input, Output]:
        """``bound`` with the SDKs' own retries off (what is actually run)."""
        if self._quiet is None:
            self._quiet = without_provider_retries(self.bound)
        return self._quiet

    @contextmanager
    def _entered(self, scope: RetryScope) -> Iterator[None]:
        with scope.active(), use_handler(), ending_calls_on_error():
            yield

    def _attempt_config(
        self,
        config: RunnableConfig,
        run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
        attempt: int,
    ) -> RunnableConfig:
        tag = f"retry:attempt:{attempt}" if attempt > 1 else None
        return patch_config(config, callbacks=run_manager.get_child(tag))

    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Output:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    def _invoke(
        self,
        input: Input,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Output:
        with retry_scope(self.policy) as scope:
            while True:
                try:
                    with self._entered(scope):
                        return self.quiet.invoke(
                            input,
                            self._attempt_config(config, run_manager, scope.attempt),
                            **kwargs,
                        )
                except Exception as exc:
                    wait = _next_wait(scope, exc)
                self.policy.sleep(wait)
                scope.attempt += 1

    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Output:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    async def _ainvoke(
        self,
        input: Input,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Output:
        with retry_scope(self.policy) as scope:
            while True:
                try:
                    with self._entered(scope):
                        return await self.quiet.ainvoke(
                            input,
                            self._attempt_config(config, run_manager, scope.attempt),
                            **kwargs,
                        )
                except Exception as exc:
                    wait = _next_wait(scope, exc)
                await self.policy.async_sleep(wait)
                scope.attempt += 1

    def stream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Output]:
        return self._transform_stream_with_config(iter([input]), self._transform, config, **kwargs)

    def _transform(
        self,
        inputs: Iterator[Input],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Output]:
        value = _merged(inputs)
        with retry_scope(self.policy) as scope:

            def entered() -> AbstractContextManager[Any]:
                return self._entered(scope)

            while True:
                attempt_config = self._attempt_config(config, run_manager, scope.attempt)
                steps = _each_step(
                    entered, iter(self.quiet.stream(value, attempt_config, **kwargs))
                )
                try:
                    first = next(steps)
                except StopIteration:
                    return
                except Exception as exc:
                    wait = _next_wait(scope, exc)
                    self.policy.sleep(wait)
                    scope.attempt += 1
                    continue
                yield first
                yield from steps
                return

    def astream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Output]:
        async def once() -> AsyncIterator[Input]:
            yield input

        return self._atransform_stream_with_config(once(), self._atransform, config, **kwargs)

    async def _atransform(
        self,
        inputs: AsyncIterator[Input],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Output]:
        value = await _amerged(inputs)
        with retry_scope(self.policy) as scope:

            def entered() -> AbstractContextManager[Any]:
                return self._entered(scope)

            while True:
                attempt_config = self._attempt_config(config, run_manager, scope.attempt)
                steps = _aeach_step(
                    entered, aiter(self.quiet.astream(value, attempt_config, **kwargs))
                )
                try:
                    first = await anext(steps)
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    wait = _next_wait(scope, exc)
                    await self.policy.async_sleep(wait)
                    scope.attempt += 1
                    continue
                yield first
                async for item in steps:
                    yield item
                return


def _next_wait(scope: RetryScope, error: Exception) -> float:
    """The wait before the next attempt; raises what to raise when it is to stop."""
    decision, final = scope.decide(error)
    if not decision.retry:
        if final is error:
            raise error
        raise final from error
    return decision.wait


def _merged(inputs: Iterator[T]) -> T:
    """The whole input of a transform (chunks added, as LangChain does)."""
    final: Any = None
    got = False
    for chunk in inputs:
        if not got:
            final, got = chunk, True
        else:
            try:
                final = final + chunk
            except TypeError:
                final = chunk
    return final  # type: ignore[no-any-return]


async def _amerged(inputs: AsyncIterator[T]) -> T:
    final: Any = None
    got = False
    async for chunk in inputs:
        if not got:
            final, got = chunk, True
        else:
            try:
                final = final + chunk
            except TypeError:
                final = chunk
    return final  # type: ignore[no-any-return]


# -- turning provider SDK retries off -----------------------------------------------------
def without_provider_retries(runnable: Runnable[Input, Output]) -> Runnable[Input, Output]:
    """A copy of ``runnable`` whose chat models and LLMs do not retry by themselves.

    A model with a ``max_retries`` field (ChatOpenAI, ChatAnthropic, OpenAI, ...) is
    copied with ``max_retries=0``, and the SDK clients it already built are replaced by
    copies with ``max_retries=0`` (``client.with_options``). Models are found inside
    sequences, parallels, bindings, fallbacks, branches and this integration's runnables;
    one called from inside a plain function (``RunnableLambda``) cannot be reached: make
    it with ``max_retries=0`` yourself. ``runnable`` itself is left as it is."""
    result: Runnable[Input, Output] = _quiet(runnable, {})
    return result


def _quiet(runnable: Any, memo: dict[int, Any]) -> Any:
    key = id(runnable)
    if key in memo:
        return memo[key]
    memo[key] = runnable  # cycles: keep the original
    out: Any
    if isinstance(runnable, BaseLanguageModel):
        out = _quiet_model(runnable)
    elif isinstance(runnable, BaseModel) and isinstance(runnable, Runnable):
        update: dict[str, Any] = {}
        for name in type(runnable).model_fields:
            value = getattr(runnable, name, None)
            new = _quiet_value(value, memo)
            if new is not value:
                update[name] = new
        out = runnable.model_copy(update=update) if update else runnable
    else:
        out = runnable
    memo[key] = out
    return out


def _quiet_value(value: Any, memo: dict[int, Any]) -> Any:
    if isinstance(value, Runnable):
        return _quiet(value, memo)
    if isinstance(value, (list, tuple)) and any(isinstance(v, Runnable) for v in value):
        items = [_quiet_value(v, memo) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items) if isinstance(value, tuple) else items
    if isinstance(value, Mapping) and any(isinstance(v, Runnable) for v in value.values()):
        mapped = {k: _quiet_value(v, memo) for k, v in value.items()}
        if all(mapped[k] is value[k] for k in value):
            return value
        return mapped
    return value


def _is_sdk_client(value: Any) -> bool:
    return callable(getattr(value, "with_options", None)) and isinstance(
        getattr(value, "max_retries", None), int
    )


def _quiet_model(model: BaseLanguageModel[Any]) -> BaseLanguageModel[Any]:
    if "max_retries" not in type(model).model_fields:
        return model
    copy = model.model_copy(update={"max_retries": 0})
    clients: dict[int, Any] = {}

    def quiet_client(client: Any) -> Any:
        if id(client) not in clients:
            clients[id(client)] = client.with_options(max_retries=0)
        return clients[id(client)]

    state = copy.__dict__
    for name, value in list(state.items()):
        try:
            if _is_sdk_client(value):
                state[name] = quiet_client(value)
            elif _is_sdk_client(getattr(value, "_client", None)):
                # an SDK resource (ChatOpenAI's ``client`` is ``root_client.chat.completions``)
                state[name] = type(value)(quiet_client(value._client))
            elif isinstance(value, dict) and isinstance(value.get("max_retries"), int):
                state[name] = {**value, "max_retries": 0}  # ChatAnthropic's _client_params
        except Exception:
            logger.warning(
                "tcc_plugin could not turn off the retries of %s.%s; its SDK may retry on its own",
                type(model).__name__,
                name,
                exc_info=True,
            )
    return copy


# -- one-liners ---------------------------------------------------------------------------
def with_budget(
    runnable: Runnable[Input, Output],
    budget: Budget | Callable[[], Budget] | None = None,
    **limits: Any,
) -> BudgetRunnable[Input, Output]:
    """``runnable`` inside a budget: ``with_budget(chain, usd=0.5, calls=20)`` gives every
    invocation a fresh budget with those limits; ``with_budget(chain, shared_budget)``
    charges one budget across invocations."""
    if budget is not None and limits:
        raise TypeError("give a budget or limits, not both")
    if budget is None:
        if not limits:
            raise TypeError("with_budget needs a budget or some limits")
        frozen = dict(limits)
        Budget(**frozen)  # validate now, not at the first invocation

        def budget_factory() -> Budget:
            return Budget(**frozen)

        budget = budget_factory
    return BudgetRunnable(bound=runnable, budget=budget)


def with_retries(
    runnable: Runnable[Input, Output], policy: RetryPolicy | None = None, **options: Any
) -> RetryRunnable[Input, Output]:
    """``runnable`` retried by ``policy`` (or ``RetryPolicy(**options)``), with the SDKs'
    own retries off."""
    if policy is not None and options:
        raise TypeError("give a policy or its options, not both")
    return RetryRunnable(bound=runnable, policy=policy or RetryPolicy(**options))
