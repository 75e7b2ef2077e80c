"""docs/shared-budgets.md, run as written: the worker-pool recipe's worker.py, three
copies at once against a real Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from .conftest import RedisServer

pytest.importorskip("tcc_plugin.integrations.redis_ledger")

DOC = Path(__file__).resolve().parents[3] / "docs" / "shared-budgets.md"


def worker_source(name: str = "worker.py") -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    (worker,) = [b for b in blocks if b.startswith(f"# {name}")]
    return worker


def test_the_worker_pool_recipe_holds_the_team_cap(server: RedisServer, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(worker_source())
    env = {**os.environ, "REDIS_URL": server.url}
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), "4"],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outcomes: list[str] = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        outcomes += out.split()
    answered = outcomes.count("answered")
    assert 1 <= answered <= 6 and outcomes.count("refused:") == 12 - answered

    from tcc_plugin import budget
    from tcc_plugin.integrations.redis_ledger import RedisLedger

    team = budget(
        usd="0.01",
        key="team-a/daily",
        period="daily",
        timezone="Europe/Paris",
        ledger=RedisLedger(server.url),
    )
    assert team.spent.usd == answered * Decimal("0.001625") <= Decimal("0.01")
    assert team.spent.calls == answered and team.in_flight == 0


def test_the_async_snippet_holds_the_cap_without_blocking(
    server: RedisServer, tmp_path: Path
) -> None:
    script = tmp_path / "async_worker.py"
    script.write_text(worker_source("async_worker.py"))
    env = {**os.environ, "REDIS_URL": server.url}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, text=True, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    answered = int(first.split()[0])
    assert 4 <= answered <= 6 and first == f"{answered} answered, {10 - answered} refused"
    assert second == f"spent {(answered * Decimal('0.001625')).normalize()} reserved 0"
