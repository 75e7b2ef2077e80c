"""The synchronous driver: samples in worker threads, decisions by the group plan.

Each sample runs in a pool thread inside a copy of the caller's context
(``contextvars.copy_context``), so the caller's budgets, the group's ledger and the
group's span follow it. Threads cannot be interrupted: when the group stops, samples
not yet started are never started, and running ones are *abandoned* — their result is
ignored, their :class:`~tcc_plugin.sampling.SampleContext` says ``cancelled``, and
their calls, when they end, are settled and charged as usual.
"""

from __future__ import annotations

import contextvars
import queue
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from opentelemetry.trace import Span

from tcc_plugin.budget import active_budgets, using
from tcc_plugin.sampling import telemetry
from tcc_plugin.sampling.group_plan import CallSample, GroupPlan, GroupSpec, Launch
from tcc_plugin.sampling.result import Candidate, SamplingResult

__all__ = ["run"]


Candidates = list[Candidate[Any]]


def _drive(engine: GroupPlan[Any], launch: Launch) -> Candidates:
    """Carry out one sample's job in this (worker) thread."""
    job = engine.job(launch)
    step = next(job)
    while True:
        try:
            if isinstance(step, CallSample):
                outcome = step.launch.call_sync()
            else:
                outcome = step.verifier.verify(step.candidate)
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
    engine: GroupPlan[Any], span: Span | None, launch: Launch, future: Future[Candidates]
) -> None:
    try:
        candidates = future.result()
    except BaseException as exc:  # the job itself broke (never a sample's error)
        candidates = engine.crashed(launch.index, exc)
    else:
        engine.finished(launch.index, candidates)
    for candidate in candidates:
        telemetry.record_sample(span, candidate)


def _abandon(
    engine: GroupPlan[Any], span: Span | None, launch: Launch, future: Future[Candidates]
) -> None:
    if future.cancel():  # it never started: its slot is ours to give back
        launch.release_unstarted()
    for candidate in engine.cancelled(launch.index):
        telemetry.record_sample(span, candidate)


def run(spec: GroupSpec) -> SamplingResult[Any]:
    """Run a group synchronously."""
    engine: GroupPlan[Any] = GroupPlan(spec, active_budgets())
    span = telemetry.start_group_span(spec.name, spec.method, spec.n, spec.concurrency)
    pool = ThreadPoolExecutor(max_workers=spec.concurrency, thread_name_prefix="tcc-sample")
    futures: dict[Future[Candidates], Launch] = {}
    finished: queue.SimpleQueue[Future[Candidates]] = queue.SimpleQueue()
    try:
        with using(engine.chain), telemetry.activated(span):
            while True:
                for launch in engine.launches():
                    context = contextvars.copy_context()  # one per thread: budgets, span
                    future = pool.submit(context.run, _drive, engine, launch)
                    futures[future] = launch
                    future.add_done_callback(finished.put)
                if engine.stopping or not futures:
                    break
                try:
                    batch = [finished.get(timeout=engine.wait_timeout())]
                except queue.Empty:
                    engine.expire()
                    continue
                while not finished.empty():  # everything that finished meanwhile, at once
                    batch.append(finished.get_nowait())
                for future in batch:
                    _collect(engine, span, futures.pop(future), future)
                engine.decide()
            for future, launch in futures.items():  # the group stopped: abandon the rest
                if future.done():
                    _collect(engine, span, launch, future)
                else:
                    _abandon(engine, span, launch, future)
            futures.clear()
        result = engine.result()
    except BaseException as exc:
        for future, launch in futures.items():
            if not future.done():
                _abandon(engine, span, launch, future)
        telemetry.end_group_span(span, None, exc)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    error = engine.outcome_error(result)
    telemetry.end_group_span(span, result, error)
    if error is not None:
        raise error
    return result
