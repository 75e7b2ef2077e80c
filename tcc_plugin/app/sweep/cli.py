"""``tcc sweep``: run a sweep with live progress, print its table, write the policy;
``tcc sweep report RESULTS``: analyse a results file again (other constraints, plots)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console

from tcc_plugin.sweep.analysis import Analysis, analyze
from tcc_plugin.sweep.builtin import BUILTIN, builtin
from tcc_plugin.sweep.evalset import BadEvalLine, EvalSet, load_evalset
from tcc_plugin.sweep.grid import METHODS
from tcc_plugin.sweep.policy import PolicyError, policy_from_analysis
from tcc_plugin.sweep.run import SweepConfigError, SweepProgress, sweep
from tcc_plugin.sweep.store import read_rows
from tcc_plugin.sweep.target import Target, function_target

__all__ = ["main"]

GPU_USD_PER_HOUR = "0.80"


def _budget_value(text: str) -> int | str | None:
    text = text.strip()
    if text.lower() in ("none", "default", "-"):
        return None
    return int(text) if text.isdigit() else text


def _csv(convert: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [convert(t) for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("give at least one value")
        return items

    return parse


def _method(text: str) -> str:
    if text.strip() not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose from {METHODS}")
    return text.strip()


def _add_analysis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=float, default=0.05, help="error rate of the tests")
    p.add_argument("--max-usd-per-question", type=float, help="constraint for the recommendation")
    p.add_argument("--max-p95-seconds", type=float, help="constraint for the recommendation")
    p.add_argument("--min-accuracy", type=float, help="constraint for the recommendation")
    p.add_argument("--json", metavar="FILE", help="write the analysis as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="PNG", help="write the plots (needs the plots extra)")
    p.add_argument("--policy", metavar="FILE", help="write the recommended policy (JSON)")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcc sweep", description=__doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--builtin", choices=sorted(BUILTIN), help="a built-in eval set")
    src.add_argument("--evalset", metavar="FILE", help='JSON lines {"id","question","answer"}')
    p.add_argument("--on-bad-line", choices=("skip", "fail"), default="fail")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument(
        "--target",
        default="local",
        help="local (the embedded engine), endpoint:URL, openai:MODEL, anthropic:MODEL, "
        "or module:function",
    )
    p.add_argument("--model", help="the model name at an endpoint")
    p.add_argument("--dialect", choices=("vllm", "llama.cpp"), default="vllm")
    p.add_argument("--methods", type=_csv(_method), default=["single", "forcing"])
    p.add_argument("--budgets", type=_csv(_budget_value), default=[64, 256, 1024])
    p.add_argument("--n", type=_csv(int), default=[4], help="samples for sampling methods")
    p.add_argument("--stop", type=_csv(_budget_value), default=[None], help="e.g. unbeatable")
    p.add_argument("--min-thinking", type=int, help="forcing's minimum thinking tokens")
    p.add_argument("--seeds", type=int, default=1, help="repeats of every question")
    p.add_argument("--checker", choices=("exact", "numeric", "code"))
    p.add_argument("--verifier", choices=("code",), help="best-of-N's verifier")
    p.add_argument("--results", default="sweep-results.jsonl", help="results file (resumed)")
    p.add_argument("--name", help="the sweep's name (default: evalset@target)")
    p.add_argument("--usd", help="hard cap on what the sweep spends")
    p.add_argument("--output-tokens", type=int, help="hard cap on output tokens")
    p.add_argument("--calls", type=int, help="hard cap on calls")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--gpu-usd-per-hour", default=GPU_USD_PER_HOUR, help="local GPU price")
    p.add_argument("--no-progress", action="store_true")
    _add_analysis_args(p)
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcc sweep report", description="analyse a results file")
    p.add_argument("results", help="a results file written by tcc sweep")
    p.add_argument("--sweep", help="which sweep of the file (when it holds several)")
    _add_analysis_args(p)
    return p


def _console(args: argparse.Namespace) -> Console:
    # a file or pipe gets the whole table, not 80 columns of it
    stream = sys.stderr if args.json == "-" else sys.stdout
    return Console(stderr=args.json == "-", width=None if stream.isatty() else 160)


def _evalset(args: argparse.Namespace) -> EvalSet:
    if args.evalset:
        return load_evalset(args.evalset, on_bad_line=args.on_bad_line).head(args.limit)
    return builtin(args.builtin or "arithmetic").head(args.limit)


def _function(spec: str) -> Target:
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like python -m: the user's module is local
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SweepConfigError(f"cannot load target {spec!r}: {exc}") from None
    return function_target(fn, name=spec)


@contextmanager
def _target(args: argparse.Namespace, console: Console, max_budget: int) -> Iterator[Target]:
    spec: str = args.target
    kind, _, rest = spec.partition(":")
    if spec == "local":
        yield from _local(args, console, max_budget)
    elif kind == "endpoint":
        import openai

        if not args.model:
            raise SweepConfigError("an endpoint target needs --model")
        from tcc_plugin.app.sweep.targets import openai_compatible_target

        base = rest.rstrip("/")
        client = openai.OpenAI(
            base_url=base if base.endswith("/v1") else base + "/v1",
            api_key=os.environ.get("OPENAI_API_KEY", "none"),
        )
        yield openai_compatible_target(
            client, args.model, flavour=args.dialect, temperature=args.temperature
        )
    elif kind == "openai":
        import openai

        from tcc_plugin.app.sweep.targets import openai_compatible_target

        yield openai_compatible_target(openai.OpenAI(), rest, flavour="openai")
    elif kind == "anthropic":
        import anthropic

        from tcc_plugin.app.sweep.targets import anthropic_target

        yield anthropic_target(anthropic.Anthropic(), rest)
    elif rest:
        yield _function(spec)
    else:
        raise SweepConfigError(f"unknown target {spec!r}")


def _local(args: argparse.Namespace, console: Console, max_budget: int) -> Iterator[Target]:
    import openai

    from tcc_plugin.app.local_engine import LocalEngine, RichProgress
    from tcc_plugin.app.sweep.targets import openai_compatible_target
    from tcc_plugin.pricing import GpuHourPrice, PriceBook

    progress: Any = False if args.no_progress else RichProgress(console)
    engine = LocalEngine(
        parallel=args.concurrency, ctx_size=max(2048, max_budget + 768), progress=progress
    )
    if not args.no_progress:
        console.print("[bold]starting the local engine[/] (the first run builds it: minutes)")
    with engine:
        book = PriceBook()
        book.override(engine.alias, GpuHourPrice.of(Decimal(args.gpu_usd_per_hour)))
        client = openai.OpenAI(base_url=f"{engine.base_url}/v1", api_key="local")
        try:
            yield openai_compatible_target(
                client,
                engine.alias,
                flavour="llama.cpp",
                name=f"local:{engine.alias}",
                temperature=args.temperature,
                price_book=book,
            )
        finally:
            client.close()


def _outputs(
    args: argparse.Namespace,
    a: Analysis,
    rows: list[dict[str, Any]],
    console: Console,
    refused: dict[str, str] | None = None,
) -> None:
    from tcc_plugin.app.sweep.render import as_json, render

    render(a, console, refused)
    if args.json:
        text = json.dumps(as_json(a, refused), indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.plot:
        from tcc_plugin.app.sweep.plots import plot

        console.print(f"plot: {plot(a, args.plot)}")
    if args.policy:
        policy = policy_from_analysis(a, rows)
        console.print(f"policy: {policy.write(args.policy)} ({policy.cell.id})")


def _run(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(list(argv))
    console = _console(args)
    questions = _evalset(args)
    for bad in questions.skipped:
        console.print(f"[yellow]skipped[/] {bad}")
    checker = args.checker  # default: code when every question has tests, else numeric
    tokens = [b for b in args.budgets if isinstance(b, int)]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[spend]}"),
        console=console,
        disable=args.no_progress,
    )
    task = bar.add_task("sweep", total=None, spend="")

    def progress(p: SweepProgress) -> None:
        cap = f" of ${p.usd_cap}" if p.usd_cap is not None else ""
        bar.update(
            task,
            total=p.total,
            completed=p.done,
            spend=f"{p.calls} calls · ${p.spent_usd:.6f}{cap}",
        )
        if p.message:
            bar.console.print(f"[red]{p.message}[/]")

    with _target(args, console, max(tokens, default=1024)) as target, bar:
        result = sweep(
            questions,
            target,
            methods=args.methods,
            budgets=args.budgets,
            n=args.n,
            stop=args.stop,
            min_thinking_tokens=args.min_thinking,
            seeds=args.seeds,
            checker=checker,
            verifier=args.verifier,
            results=args.results,
            name=args.name,
            usd=args.usd,
            output_tokens=args.output_tokens,
            calls=args.calls,
            concurrency=args.concurrency,
            on_progress=progress,
            alpha=args.alpha,
            max_usd_per_question=args.max_usd_per_question,
            max_p95_seconds=args.max_p95_seconds,
            min_accuracy=args.min_accuracy,
        )
    console.print(
        f"{result.answered} answered now, {result.reused} reused from {result.path}; "
        f"this run: {result.spent.calls} calls, ${result.spent.usd:.6f}"
    )
    if result.analysis is None:
        console.print("[red]no answers to analyse[/]")
        return 1
    _outputs(args, result.analysis, result.rows, console, result.refused)
    return 0


def _report(argv: Sequence[str]) -> int:
    args = _report_parser().parse_args(list(argv))
    console = _console(args)
    rows = read_rows(args.results)
    a = analyze(
        rows,
        alpha=args.alpha,
        max_usd_per_question=args.max_usd_per_question,
        max_p95_seconds=args.max_p95_seconds,
        min_accuracy=args.min_accuracy,
        sweep=args.sweep,
    )
    mine = [r for r in rows if r["sweep"] == a.sweep]
    refused = {r["cell_id"]: r["error"] for r in mine if r.get("refused")}
    _outputs(args, a, mine, console, refused)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``tcc sweep [options]`` or ``tcc sweep report RESULTS [options]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "report":
            return _report(args[1:])
        return _run(args)
    except (SweepConfigError, BadEvalLine, PolicyError, ValueError, OSError, ImportError) as exc:
        print(f"tcc sweep: error: {exc}", file=sys.stderr)
        return 2
