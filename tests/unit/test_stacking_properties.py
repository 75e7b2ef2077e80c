"""Property test: stacked calls (an ``@llm_call`` function whose body makes 0, 1 or 2
provider calls, themselves ``@llm_call`` functions) hand reservations over exactly,
in threads and asyncio tasks at once.

After each random sequence: every budget's spend <= its caps (the calls cap counts
provider calls only), nothing is left reserved or in flight, and spent equals the sum
of what the provider calls that ran used (computed here), so an enclosing call that
charged too, or a handover that lost a charge, shows.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcc_plugin import Budget, BudgetExceeded, Usage, llm_call

pytestmark = pytest.mark.filterwarnings("ignore::tcc_plugin.pricing.UnknownModelWarning")

# One stacked job: how many provider calls its body makes, each's output cap and actual
# output (<= the cap), and whether it runs in a thread or an asyncio task.
job = st.tuples(
    st.integers(min_value=0, max_value=2),
    st.lists(
        st.tuples(st.integers(1, 60), st.integers(0, 60)).map(lambda t: (t[0], min(t[0], t[1]))),
        min_size=2,
        max_size=2,
    ),
    st.booleans(),
)


# The provider calls declare their input (5 tokens) so their reservation bounds them
# whole and the token cap holds exactly (an undeclared input is checked after the call).
@llm_call(model=None, input_tokens=5)
def provider(out: int, max_tokens: int = 0) -> Usage:
    return Usage(input=5, output=out)


@llm_call(model=None, input_tokens=5)
async def aprovider(out: int, max_tokens: int = 0) -> Usage:
    await asyncio.sleep(0)
    return Usage(input=5, output=out)


@llm_call(model=None, max_output_tokens=50)
def outer(plan: list[tuple[int, int]], used: list[int], lock: threading.Lock) -> Usage:
    for cap, out in plan:
        provider(out, max_tokens=cap)
        with lock:
            used.append(5 + out)
    # Without nested calls the function is itself the provider call, and this its usage;
    # with them, it is ignored (the nested calls charged).
    return Usage(input=7, output=3)


@llm_call(model=None, max_output_tokens=50)
async def aouter(plan: list[tuple[int, int]], used: list[int], lock: threading.Lock) -> Usage:
    for cap, out in plan:
        await aprovider(out, max_tokens=cap)
        with lock:
            used.append(5 + out)
    return Usage(input=7, output=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.lists(job, min_size=1, max_size=8),
    calls_cap=st.integers(0, 10),
    tokens_cap=st.integers(0, 600),
)
def test_stacked_calls_charge_provider_calls_exactly(
    jobs: list[Any], calls_cap: int, tokens_cap: int
) -> None:
    b = Budget(calls=calls_cap, total_tokens=tokens_cap)
    used: list[int] = []
    lock = threading.Lock()

    def run_sync(plan: list[tuple[int, int]]) -> None:
        try:
            with b:
                outer(plan, used, lock)
        except BudgetExceeded:
            return
        if not plan:
            with lock:
                used.append(10)

    async def run_async(plan: list[tuple[int, int]]) -> None:
        try:
            async with b:
                await aouter(plan, used, lock)
        except BudgetExceeded:
            return
        if not plan:
            with lock:
                used.append(10)

    threaded = [plans[:count] for count, plans, in_thread in jobs if in_thread]
    tasks = [plans[:count] for count, plans, in_thread in jobs if not in_thread]

    async def main() -> None:
        await asyncio.gather(*(run_async(p) for p in tasks))

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(contextvars.copy_context().run, run_sync, p) for p in threaded]
        asyncio.run(main())
        for f in futures:
            f.result()

    assert b.reserved.is_zero() and b.in_flight == 0
    assert b.spent.calls == len(used) <= calls_cap
    assert b.spent.total_tokens == sum(used) <= tokens_cap
