"""The retry layer: one tenacity-based policy, applied inside the call lifecycle.

:class:`RetryPolicy` decides; the sync and async drivers in
:mod:`tcc_plugin.lifecycle` only carry its decisions out (sleep, re-reserve, send
again). Stop and wait strategies are tenacity's own objects, so they compose the
tenacity way (``stop_after_attempt(5) | stop_after_delay(30)``).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Final

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from tcc_plugin import _scopes
from tcc_plugin.adapter import ErrorInfo
from tcc_plugin.errors import TCCError

__all__ = [
    "RetriesExhausted",
    "RetryDecision",
    "RetryEvent",
    "RetryPolicy",
    "active_retry_policy",
    "classify_error",
    "classify_status",
    "parse_retry_after",
    "wait_retry_after",
]

_ACTIVE: contextvars.ContextVar[tuple[RetryPolicy, ...]] = contextvars.ContextVar(
    "tcc_plugin_retry_policies", default=()
)

# The one table of retryable HTTP statuses (every 5xx is retryable too); integrations
# classify statuses through classify_status below.
_RETRYABLE_STATUS: Final = {
    408: "request_timeout",
    409: "conflict",
    429: "rate_limit",
    529: "overloaded",
}
# Exception class names of httpx/httpx2 (and similar clients), matched along the MRO so
# the core needs to import none of them.
_TIMEOUT_NAMES = {
    "TimeoutException",
    "ReadTimeout",
    "ConnectTimeout",
    "WriteTimeout",
    "PoolTimeout",
}
_CONNECTION_NAMES = {
    "ConnectError",
    "NetworkError",
    "ReadError",
    "WriteError",
    "RemoteProtocolError",
    "ProtocolError",
}


class RetriesExhausted(TCCError):
    """A retryable error persisted: the policy gave up. ``last_error`` (also the
    ``__cause__``) is the provider's last exception; ``attempts`` how many were made."""

    def __init__(self, attempts: int, last_error: BaseException, reason: str) -> None:
        self.attempts = attempts
        self.last_error = last_error
        self.reason = reason
        super().__init__(
            f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} ({reason}): "
            f"{type(last_error).__name__}: {last_error}"
        )


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt: retry after ``wait`` seconds, or stop."""

    retry: bool
    wait: float
    reason: str
    info: ErrorInfo | None
    exhausted: bool = False


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Passed to the ``before_sleep`` hook before each wait."""

    attempt: int
    error: BaseException
    info: ErrorInfo | None
    wait: float


def parse_retry_after(
    headers: Mapping[str, str] | Any, now: datetime | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP
    date); ``None`` when absent or unreadable."""
    if headers is None:
        return None
    try:
        raw_ms = headers.get("retry-after-ms")
        if raw_ms is not None:
            return max(float(raw_ms) / 1000.0, 0.0)
        raw = headers.get("retry-after")
    except Exception:
        return None
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now or datetime.now(tz=timezone.utc)
    return max((when - current).total_seconds(), 0.0)


def _names(error: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(error).__mro__}


def classify_error(error: BaseException) -> ErrorInfo | None:
    """The generic reading of an error: HTTP status and headers by duck typing,
    timeouts and connection errors by type. ``None``: nothing known about it."""
    response = getattr(error, "response", None)
    status = getattr(error, "status_code", None)
    if not isinstance(status, int):
        status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return classify_status(status, getattr(response, "headers", None), trust_header=False)
    if isinstance(error, json.JSONDecodeError):  # a body that is not what it claims
        return ErrorInfo(False, "malformed")
    names = _names(error)
    if isinstance(error, TimeoutError) or names & _TIMEOUT_NAMES:
        return ErrorInfo(True, "timeout")
    if isinstance(error, ConnectionError) or names & _CONNECTION_NAMES:
        return ErrorInfo(True, "connection")
    return None


def classify_status(status: int, headers: Any = None, *, trust_header: bool = True) -> ErrorInfo:
    """How to treat an HTTP error status: 408, 409, 429, 529 and 5xx are retryable.

    ``Retry-After`` / ``retry-after-ms`` are read from ``headers``; with ``trust_header``
    a provider's ``x-should-retry: true|false`` overrides the table (the OpenAI and
    Anthropic SDKs send it)."""
    if status in _RETRYABLE_STATUS:
        reason, retryable = _RETRYABLE_STATUS[status], True
    elif status >= 500:
        reason, retryable = "server", True
    else:
        reason, retryable = "client", False
    retry_after: float | None = None
    if headers is not None:
        if trust_header:
            try:
                verdict = headers.get("x-should-retry")
            except Exception:
                verdict = None
            if verdict == "true":
                retryable = True
            elif verdict == "false":
                retryable = False
        retry_after = parse_retry_after(headers)
    return ErrorInfo(retryable, reason, status, retry_after if retryable else None)


class wait_retry_after(wait_base):
    """Wait what the provider asked for (``Retry-After``, capped at ``cap``), else
    what ``fallback`` says."""

    def __init__(self, fallback: wait_base, cap: float = 60.0) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        info: ErrorInfo | None = getattr(retry_state, "tcc_error_info", None)
        if info is not None and info.retry_after is not None:
            return min(info.retry_after, self.cap)
        return float(self.fallback(retry_state))


class RetryPolicy:
    """Retry what is retryable (408, 409, 429, 5xx, Anthropic 529, timeouts, connection
    errors), with exponential backoff and jitter, honouring ``Retry-After``, never past
    the budget's deadline, never on :class:`~tcc_plugin.BudgetExceeded`.

    ``stop`` and ``wait`` take tenacity strategies (default: ``max_attempts`` attempts;
    exponential backoff from ``initial_wait`` doubling to ``max_wait`` plus up to
    ``jitter`` seconds). ``retry_if(error, info)`` overrides which errors are retried.
    ``before_sleep`` runs before each wait. ``sleep``, ``async_sleep`` and ``clock`` are
    injectable for tests. Pass a policy to a call (``instrument(client, retry=...)``,
    ``@llm_call(retry=...)``) or enter it (``with RetryPolicy(...):``) to make it the
    policy of every call inside; while a policy applies, the provider SDK's own retries
    are off for that call so the two never multiply.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        initial_wait: float = 0.5,
        max_wait: float = 30.0,
        jitter: float = 0.5,
        max_retry_after: float = 60.0,
        stop: stop_base | None = None,
        wait: wait_base | None = None,
        retry_if: Callable[[BaseException, ErrorInfo | None], bool] | None = None,
        before_sleep: Callable[[RetryEvent], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.stop: stop_base = (
            stop if stop is not None else tenacity.stop_after_attempt(max_attempts)
        )
        backoff = tenacity.wait_exponential_jitter(
            multiplier=initial_wait, max=max_wait, jitter=jitter
        )
        self.wait = wait_retry_after(wait if wait is not None else backoff, max_retry_after)
        self.retry_if = retry_if
        self.before_sleep = before_sleep
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.clock = clock
        self._retrying = tenacity.Retrying(stop=self.stop, wait=self.wait, sleep=sleep)

    def __repr__(self) -> str:
        return f"RetryPolicy(stop={self.stop!r}, wait={self.wait.fallback!r})"

    def decide(
        self,
        attempt: int,
        started_at: float,
        error: BaseException,
        info: ErrorInfo | None,
        time_left: float | None = None,
    ) -> RetryDecision:
        """Whether attempt number ``attempt`` (1-based), which raised ``error``, is
        retried, and after how long. ``time_left`` is what the budget deadline leaves."""
        if isinstance(error, TCCError) or not isinstance(error, Exception):
            return RetryDecision(False, 0.0, "not retryable", info)
        retryable = (
            self.retry_if(error, info)
            if self.retry_if is not None
            else info is not None and info.retryable
        )
        if not retryable:
            return RetryDecision(False, 0.0, "not retryable", info)
        state = tenacity.RetryCallState(self._retrying, None, (), {})
        state.start_time = started_at
        state.attempt_number = attempt
        outcome = tenacity.Future(attempt)
        outcome.set_exception(error)
        state.outcome = outcome
        state.outcome_timestamp = self.clock()
        state.tcc_error_info = info  # type: ignore[attr-defined]  # read by wait_retry_after
        wait = max(float(self.wait(state)), 0.0)
        state.upcoming_sleep = wait
        if self.stop(state):
            return RetryDecision(False, 0.0, f"stopped after {attempt} attempts", info, True)
        if time_left is not None and wait >= time_left:
            return RetryDecision(
                False,
                wait,
                f"waiting {wait:.3g}s would pass the budget deadline "
                f"({max(time_left, 0):.3g}s left)",
                info,
                True,
            )
        return RetryDecision(True, wait, info.reason if info else "retry_if", info)

    # -- as a scope -----------------------------------------------------------------------
    def __enter__(self) -> RetryPolicy:
        _scopes.push(_ACTIVE, self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _scopes.pop(_ACTIVE, self)


def active_retry_policy() -> RetryPolicy | None:
    """The innermost policy entered around the current code, if any."""
    stack = _ACTIVE.get()
    return stack[-1] if stack else None
