"""Wall time per code verification: the bubblewrap sandbox against the fallbacks and a
bare subprocess of the same interpreter.

Each round times, in a shuffled order, one verification of a trivial candidate (one
passing test) in every sandbox mode (and bubblewrap with the tests isolated), and a
bare ``python -I -S -B -c pass`` (the floor any subprocess-based verifier pays).
Prints the median and the spread (p10-p90) per variant, the added milliseconds over
the bare subprocess, and the ratio to it. The first verification of each mode (which
inspects the interpreter's libraries once per process) is a warm-up, not counted.

    python benchmarks/code_verifier_sandbox.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
import warnings

from tcc_plugin.sampling import Candidate, code_verifier
from tcc_plugin.sampling._cgroup import cgroup_roots
from tcc_plugin.sampling.code_verifier import bwrap_available, namespace_sandbox_available

CANDIDATE = Candidate(0, "ok", value="def add(a, b):\n    return a + b\n")


def bare() -> None:
    subprocess.run([sys.executable, "-I", "-S", "-B", "-c", "pass"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    variants = {"bare subprocess": bare}
    modes = [
        ("audit", True),
        ("namespace", namespace_sandbox_available()),
        ("bwrap", bwrap_available()),
    ]
    for mode, available in modes:
        if available:
            verifier = code_verifier("assert add(1, 2) == 3", network=mode, timeout=30)  # type: ignore[arg-type]
            assert verifier.verify(CANDIDATE).score == 1.0  # warm-up, and a check
            variants[f"code_verifier network={mode!r}"] = lambda v=verifier: v.verify(CANDIDATE)
    if bwrap_available():
        isolated = code_verifier(
            "assert add(1, 2) == 3", network="bwrap", timeout=30, isolate_tests=True
        )
        assert isolated.verify(CANDIDATE).score == 1.0
        variants["bwrap, isolate_tests=True"] = lambda: isolated.verify(CANDIDATE)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        order = list(variants)
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            variants[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times["bare subprocess"])
    print(f"{args.rounds} rounds; cgroup per verification: {bool(cgroup_roots())}")
    print(f"{'variant':<36} {'median ms':>10} {'p10-p90 ms':>14} {'added ms':>9} {'ratio':>6}")
    for name, values in times.items():
        deciles = statistics.quantiles(values, n=10)
        median = statistics.median(values)
        print(
            f"{name:<36} {median:>10.1f} {deciles[0]:>6.1f}-{deciles[-1]:<7.1f}"
            f" {median - base:>9.1f} {median / base:>6.2f}"
        )


if __name__ == "__main__":
    main()
