"""LCEL runnables over the core's routing: :class:`RouterRunnable` and
:class:`CascadeRunnable`.

Each route's ``answer`` is a LangChain runnable (or any callable); the chosen route runs
as a child run tagged ``route:<name>``, its model calls children of the routing span and
charged to the active budgets. Estimation, the budget check, escalation and telemetry
are the routing module's; nothing is reimplemented here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from langchain_core.runnables.utils import Input
from pydantic import ConfigDict

from tcc_plugin.integrations.langchain_callbacks import use_handler
from tcc_plugin.integrations.langchain_runnables import _aeach_step, _each_step
from tcc_plugin.routing import Cascade, Route, RouteInProgress, Router

__all__ = ["CascadeRunnable", "RouterRunnable"]


def _bind(routes: Sequence[Route], config: RunnableConfig, run_manager: Any) -> list[Route]:
    """``routes`` whose runnables are invoked with a child config of this run."""
    bound: list[Route] = []
    for route in routes:
        target = route.answer
        if not isinstance(target, Runnable):
            bound.append(route)
            continue
        child = patch_config(config, callbacks=run_manager.get_child(f"route:{route.name}"))

        def call(value: Any, target: Runnable[Any, Any] = target, child: Any = child) -> Any:
            return target.invoke(value, child)

        async def acall(value: Any, target: Runnable[Any, Any] = target, child: Any = child) -> Any:
            return await target.ainvoke(value, child)

        bound.append(replace(route, answer=_Dual(call, acall)))
    return bound


class _Dual:
    """A callable with a sync and an async way to run (``Route.acall`` awaits it)."""

    def __init__(self, call: Any, acall: Any) -> None:
        self.call, self.acall = call, acall

    def __call__(self, value: Any) -> Any:
        return self.call(value)

    def invoke(self, value: Any) -> Any:
        return self.call(value)

    async def ainvoke(self, value: Any) -> Any:
        return await self.acall(value)


def _scope(decision: RouteInProgress) -> Any:
    """Each step of a streamed route: the routing span current, our handler in use."""

    @contextmanager
    def scope() -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(decision.activated())
            stack.enter_context(use_handler())
            yield

    return scope


def _merge(final: Any, chunk: Any) -> Any:
    if final is None:
        return chunk
    try:
        return final + chunk
    except TypeError:
        return chunk


class _Routing(RunnableSerializable[Input, Any]):
    """What both runnables share: invoke/ainvoke over a routing object bound to the run."""

    output: str = "value"

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _bound(self, config: RunnableConfig, run_manager: Any) -> Router | Cascade:
        raise NotImplementedError

    def _out(self, result: Any) -> Any:
        return result if self.output == "result" else result.answer

    def invoke(self, input: Input, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._invoke, input, config, **kwargs)

    async def ainvoke(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        return await self._acall_with_config(self._ainvoke, input, config, **kwargs)

    def _invoke(
        self, input: Input, run_manager: CallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        with use_handler():
            return self._out(self._bound(config, run_manager).run(input))

    async def _ainvoke(
        self, input: Input, run_manager: AsyncCallbackManagerForChainRun, config: RunnableConfig
    ) -> Any:
        with use_handler():
            return self._out(await self._bound(config, run_manager).arun(input))


class RouterRunnable(_Routing[Input]):
    """Routes each input with ``router`` (a :class:`~tcc_plugin.routing.Router` whose
    routes' answers are runnables) and returns the chosen route's output.

    ``stream``/``astream`` decide first, then stream the chosen route's chunks (its calls
    still nest under the routing span); ``output="result"`` returns the
    :class:`~tcc_plugin.routing.RouteResult` (route, difficulty, reason) instead."""

    router: Router

    def _bound(self, config: RunnableConfig, run_manager: Any) -> Router:
        r = self.router
        return Router(
            _bind(r.routes, config, run_manager),
            r.estimator,
            fallback=None if r.fallback is None else r.fallback.name,
            name=r.name,
        )

    def stream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        decision = self.router.begin(input)
        target = decision.route.answer
        final: Any = None
        try:
            if isinstance(target, Runnable):
                for chunk in _each_step(_scope(decision), iter(target.stream(input, config))):
                    final = _merge(final, chunk)
                    yield chunk
            else:
                with _scope(decision)():
                    final = decision.route.call(input)
                yield final
        except BaseException as exc:
            decision.fail(exc)
            raise
        decision.finish(final)

    async def astream(
        self, input: Input, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        decision = await self.router.abegin(input)
        target = decision.route.answer
        final: Any = None
        try:
            if isinstance(target, Runnable):
                chunks = _aeach_step(_scope(decision), target.astream(input, config))
                async for chunk in chunks:
                    final = _merge(final, chunk)
                    yield chunk
            else:
                with _scope(decision)():
                    final = await decision.route.acall(input)
                yield final
        except BaseException as exc:
            decision.fail(exc)
            raise
        decision.finish(final)


class CascadeRunnable(_Routing[Input]):
    """Runs ``cascade`` (a :class:`~tcc_plugin.routing.Cascade` whose routes' answers are
    runnables) and returns the accepted output. A cascade judges whole answers, so
    ``stream`` yields the accepted output once."""

    cascade: Cascade

    def _bound(self, config: RunnableConfig, run_manager: Any) -> Cascade:
        c = self.cascade
        return Cascade(_bind(c.routes, config, run_manager), c.accept, carry=c.carry, name=c.name)
