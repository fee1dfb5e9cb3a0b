"""The ``lungseg bench`` command line: its flags, and running the bench from them."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lungseg.bench.harness import default_config
from lungseg.bench.report import write_markdown
from lungseg.bench.run import run_bench
from lungseg.errors import LungsegError

__all__ = ["add_arguments", "main", "run_from_args"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``lungseg bench`` flags to ``parser`` (used by :func:`main` and the ``lungseg`` CLI)."""
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few iterations, < 1 minute (default: off)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--out", default="results/bench", help="output folder for bench.json and bench.md "
                                                               "(default: results/bench)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--compile", dest="compile_models", action=argparse.BooleanOptionalAction, default=None,
                        help="add torch.compile variants (default: on CUDA only)")
    parser.add_argument("--sections", default=None,
                        help="comma list of models,memory,crf,train_step,data,predict (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations (default: 5; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default: 1)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default: 4 CPU, 32 CUDA)")
    parser.add_argument("--patch-size", type=int, default=None, help="training patch side (default: 128; quick 32)")
    parser.add_argument("--infer-batch", type=int, default=None, help="inference batch (default: 8 CPU, 128 CUDA)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    return parser


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`run_bench` from parsed :func:`add_arguments` flags and print the markdown summary."""
    from lungseg.device import resolve_device

    overrides = {k: v for k, v in (("repeats", args.repeats), ("warmup", args.warmup),
                                   ("train_batch", args.train_batch), ("patch_size", args.patch_size),
                                   ("infer_batch", args.infer_batch))
                 if v is not None}
    config = None
    if overrides:
        try:
            config = replace(default_config(args.quick, resolve_device(args.device)), **overrides)
        except ValueError as exc:
            raise LungsegError(str(exc).replace("BenchConfig.", "--").replace("_", "-")) from None
    if args.threads is not None and args.threads < 1:
        raise LungsegError(f"--threads must be a positive integer, got {args.threads}")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    result = run_bench(quick=args.quick, device=args.device, out_dir=args.out, config=config, threads=args.threads,
                       compile_models=args.compile_models, sections=sections, progress=not args.quiet)
    print(write_markdown(result))
    print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.md'}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``lungseg bench [flags]``; returns 0 (errors propagate to the ``lungseg`` CLI, which prints them)."""
    # the description is the first paragraph of the package docstring (the package is imported by now)
    doc = importlib.import_module(__package__).__doc__ or ""
    parser = add_arguments(argparse.ArgumentParser(prog="lungseg bench", description=doc.split("\n\n")[0]))
    run_from_args(parser.parse_args(argv))
    return 0
