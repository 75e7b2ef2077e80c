"""The asynchronous driver: samples as asyncio tasks, decisions by the group plan.

Tasks copy the caller's context when created, so budgets, the group's ledger and the
group's span follow them. When the group stops, running samples are cancelled and
awaited: each cancelled call's reservation is settled by the call lifecycle (the
attempt counts as a call; no tokens are charged) before the group returns.
"""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.trace import Span

from tcc_plugin.budget import active_budgets, using
from tcc_plugin.sampling import telemetry
from tcc_plugin.sampling.group_plan import CallSample, GroupPlan, GroupSpec, Launch
from tcc_plugin.sampling.result import Candidate, SamplingResult

__all__ = ["run"]

Candidates = list[Candidate[Any]]
Tasks = dict["asyncio.Task[Candidates]", Launch]


async def _drive(engine: GroupPlan[Any], launch: Launch) -> Candidates:
    """Carry out one sample's job in this task."""
    job = engine.job(launch)
    step = next(job)
    while True:
        try:
            if isinstance(step, CallSample):
                outcome = await step.launch.call_async()
            else:
                outcome = await step.verifier.averify(step.candidate)
        except Exception as exc:
            try:
                step = job.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                step = job.send(outcome)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


def _collect(
    engine: GroupPlan[Any], span: Span | None, launch: Launch, task: asyncio.Task[Candidates]
) -> None:
    if task.cancelled():
        candidates = engine.cancelled(launch.index)
    elif task.exception() is not None:  # the job itself broke (never a sample's error)
        error = task.exception()
        assert error is not None
        candidates = engine.crashed(launch.index, error)
    else:
        candidates = task.result()
        engine.finished(launch.index, candidates)
    for candidate in candidates:
        telemetry.record_sample(span, candidate)


async def _cancel_all(engine: GroupPlan[Any], span: Span | None, tasks: Tasks) -> None:
    """Cancel what still runs and wait until it has unwound (reservations settled)."""
    pending = {t: launch for t, launch in tasks.items() if not t.done()}
    for task, launch in tasks.items():
        if task.done():
            _collect(engine, span, launch, task)
    tasks.clear()
    for task, launch in pending.items():
        launch.cancel()
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for launch in pending.values():
        launch.release_unstarted()  # a task cancelled before its first step never ran
        for candidate in engine.cancelled(launch.index):
            telemetry.record_sample(span, candidate)


async def run(spec: GroupSpec) -> SamplingResult[Any]:
    """Run a group in the running event loop."""
    engine: GroupPlan[Any] = GroupPlan(spec, active_budgets())
    span = telemetry.start_group_span(spec.name, spec.method, spec.n, spec.concurrency)
    tasks: Tasks = {}
    finished: asyncio.Queue[asyncio.Task[Candidates]] = asyncio.Queue()
    try:
        with using(engine.chain), telemetry.activated(span):
            while True:
                for launch in engine.launches():
                    task = asyncio.create_task(_drive(engine, launch))
                    tasks[task] = launch
                    task.add_done_callback(finished.put_nowait)
                if engine.stopping or not tasks:
                    break
                timeout = engine.wait_timeout()
                try:
                    if timeout is None:
                        batch = [await finished.get()]
                    else:
                        batch = [await asyncio.wait_for(finished.get(), timeout)]
                except asyncio.TimeoutError:
                    engine.expire()
                    continue
                while not finished.empty():  # everything that finished meanwhile, at once
                    batch.append(finished.get_nowait())
                for task in batch:
                    _collect(engine, span, tasks.pop(task), task)
                engine.decide()
            await _cancel_all(engine, span, tasks)
        result = engine.result()
    except BaseException as exc:
        if tasks:  # cancelled from outside (or interrupted): take every sample down too
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for launch in tasks.values():
                launch.release_unstarted()
        telemetry.end_group_span(span, None, exc)
        raise
    error = engine.outcome_error(result)
    telemetry.end_group_span(span, result, error)
    if error is not None:
        raise error
    return result
