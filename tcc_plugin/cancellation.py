"""What a call cancelled in flight is charged: an honest estimate, never zero.

A provider bills what it generated before the client went away, but says nothing to a
client that left. So a call cancelled after its request went out (asyncio task
cancellation — a sampling group's stop rule, timeout or deadline — or Ctrl-C) is
charged an estimate, and its span says so (``tcc.usage.estimated=true``):

- a streamed call: the input, plus one output token per chunk received so far
  (OpenAI-compatible servers stream about one token per chunk; never more than the
  call's output cap);
- a call that does not stream: its reservation, the worst case (input plus the
  output cap). A call without an output cap is charged its input only: say
  ``max_tokens`` to be charged honestly.

Usage the provider did report before the cancellation (a stream's final chunk) is
charged as is, not estimated.
"""

from __future__ import annotations

import asyncio

from tcc_plugin.budget import Charge
from tcc_plugin.usage import Usage

__all__ = ["cancelled_usage", "is_cancellation"]


def is_cancellation(error: BaseException | None) -> bool:
    """Whether ``error`` cancelled a call in flight (rather than the provider failing it)."""
    return isinstance(error, (asyncio.CancelledError, KeyboardInterrupt))


def cancelled_usage(worst: Charge, streamed_chunks: int) -> Usage:
    """The estimated usage of a cancelled call whose worst case is ``worst``, after
    ``streamed_chunks`` chunks of its stream arrived (0: nothing streamed)."""
    input_tokens = max(0, worst.total_tokens - worst.output_tokens)
    if streamed_chunks > 0:
        output = streamed_chunks
        if worst.output_tokens:
            output = min(output, worst.output_tokens)
        return Usage(input=input_tokens, output=output)
    return Usage(input=input_tokens, output=worst.output_tokens, reasoning=worst.reasoning_tokens)
