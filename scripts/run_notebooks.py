#!/usr/bin/env python
"""Execute the book's notebooks in order with papermill: ``notebooks/NN_*.md`` -> ``NN_*.ipynb``.

The MyST-markdown twin (``NN_name.md``) is the source: it is converted with jupytext, executed
with papermill in ``notebooks/`` (kernel ``python3`` run by this interpreter, i.e. the venv), and
the executed notebook is written in place as ``NN_name.ipynb``, which Jupyter Book renders
without re-execution (``execute_notebooks: off``) and ``pytest --nbval-lax`` re-checks.

Usage:
    python scripts/run_notebooks.py [--profile quick|medium|paper] [--only 01 05] [-p NAME VALUE]...
        [--out DIR] [--keep-going] [--cell-timeout SECONDS]

The default profile is ``medium``, the notebooks' own default: it renders the published medium
results (``results/medium/``) without retraining, and it is not injected (the parameters cell
already says so), so such a build leaves the notebooks identical to their sources apart from
outputs. Any other profile, and every ``-p``, adds papermill's "injected-parameters" cell, which
the book shows. ``--out DIR`` writes the executed notebooks there instead of beside their
sources (CI executes the quick profile into ``_build/ci-notebooks`` and checks those with nbval).

Without pydensecrf2 (the dense CRF of eq. 10: a source-only package that needs a C++ compiler) the
chapters that need the CRF (:func:`needs_crf`) are skipped with the reason, not failed: in place,
their committed executed notebooks stay as they are; with ``--out`` they are not written (so nbval
checks only what ran).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lungseg.experiment import PROFILES  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
# Per-cell metadata papermill/nbclient add on every run; dropped so re-runs do not churn git.
_VOLATILE_CELL_KEYS = ("papermill", "execution")


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def discover(only: list[str] | None) -> list[Path]:
    """The notebook sources ``notebooks/NN_*.md`` in chapter order (optionally only some numbers)."""
    sources = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.md"))
    if only:
        wanted = {o.zfill(2) for o in only}
        unknown = wanted - {p.name[:2] for p in sources}
        if unknown:
            raise SystemExit(f"error: --only {sorted(unknown)}: no notebooks/NN_*.md with that number "
                             f"(have {[p.name for p in sources]})")
        sources = [p for p in sources if p.name[:2] in wanted]
    if not sources:
        raise SystemExit(f"error: no notebooks/NN_*.md found in {NOTEBOOKS}")
    return sources


def _clean(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index}"  # jupytext draws random ids: fixed ones let a rebuild leave the files unchanged
        for key in _VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
    pm = nb.metadata.get("papermill")
    if isinstance(pm, dict):
        nb.metadata["papermill"] = {k: pm[k] for k in ("parameters", "default_parameters") if k in pm}
    nbformat.write(nb, path)


#: The profile the notebooks' parameters cells name.
DEFAULT_PROFILE = "medium"

#: Chapters that run the dense CRF themselves: Figure 2's CRF-refined masks, the CRF chapter.
CRF_CHAPTERS = frozenset({"06", "08"})
#: Chapters that also need it when the grid is trained rather than read from the published medium
#: results: chapter 4 evaluates every run with the CRF, and chapters 5-8 and 10 read that grid.
TRAINED_GRID_CHAPTERS = frozenset({"04", "05", "06", "07", "08", "10"})


def needs_crf(source: Path, profile: str) -> bool:
    """Whether the chapter ``source`` (``notebooks/NN_*.md``) needs pydensecrf2 with ``profile``."""
    chapter = source.name[:2]
    return chapter in (CRF_CHAPTERS if profile == DEFAULT_PROFILE else CRF_CHAPTERS | TRAINED_GRID_CHAPTERS)


def execute(source: Path, parameters: dict[str, Any], cell_timeout: int | None, out_dir: Path | None = None) -> float:
    """Convert ``source`` (.md) to a notebook, execute it, write ``source.with_suffix('.ipynb')``
    (or the same name in ``out_dir``).

    Returns:
        The wall time in seconds.

    Raises:
        papermill.PapermillExecutionError: a cell failed; the partly executed notebook (with the
            traceback in the failing cell) is still written.
    """
    import jupytext
    import papermill as pm

    target = source.with_suffix(".ipynb") if out_dir is None else out_dir / source.with_suffix(".ipynb").name
    nb = jupytext.read(source)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.metadata["kernelspec"]["name"] = "python3"
    with tempfile.TemporaryDirectory(prefix="lungseg-nb-") as tmp:
        staged = Path(tmp) / target.name
        jupytext.write(nb, staged, fmt="ipynb")
        start = time.time()
        try:
            pm.execute_notebook(
                str(staged), str(target), parameters=parameters, kernel_name="python3",
                cwd=str(NOTEBOOKS), progress_bar=False, log_output=False,
                execution_timeout=cell_timeout, request_save_on_cell_execute=False,
            )
        finally:
            if target.exists():
                _clean(target)
    return time.time() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES),
                    help=f"run profile (default: {DEFAULT_PROFILE}, the published results)")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="write the executed notebooks to DIR instead of notebooks/ (default: in place)")
    ap.add_argument("--only", nargs="+", metavar="NN", help="only these chapter numbers, e.g. --only 01 09")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="extra papermill parameter (VALUE parsed as YAML), repeatable")
    ap.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    ap.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: none)")
    args = ap.parse_args(argv)

    parameters: dict[str, Any] = {} if args.profile == DEFAULT_PROFILE else {"profile": args.profile}
    out_dir = None
    if args.out is not None:
        out_dir = Path(args.out).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, value in args.parameter:
        parameters[name] = _parse_value(value)

    # Notebooks draw inline: a headless MPLBACKEND (the Makefile exports Agg for tests) would
    # stop ipykernel from selecting the inline backend and the figures would vanish.
    os.environ.pop("MPLBACKEND", None)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    # jupyter_client runs a "python" kernel argv with sys.executable; keep the venv first on PATH too.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")

    from papermill.exceptions import PapermillExecutionError

    from lungseg.crf import MISSING_CRF, crf_available

    summary: list[dict[str, Any]] = []
    failed = []
    total_start = time.time()
    for source in discover(args.only):
        if not crf_available() and needs_crf(source, args.profile):
            kept = "its committed outputs stay" if out_dir is None else "not written"
            print(f"[run_notebooks] {source.name} skipped ({kept}): {MISSING_CRF}", flush=True)
            summary.append({"notebook": source.name, "status": "skipped: pydensecrf2 is not installed",
                            "seconds": 0.0})
            continue
        print(f"[run_notebooks] {source.name} (profile {args.profile}) ...", flush=True)
        t0 = time.time()
        try:
            seconds = execute(source, parameters, args.cell_timeout, out_dir)
            status = "ok"
        except PapermillExecutionError as exc:
            seconds = time.time() - t0
            status = "failed"
            failed.append(source.name)
            print(f"[run_notebooks]   FAILED in cell {exc.exec_count}: {exc.ename}: {exc.evalue}", flush=True)
        print(f"[run_notebooks]   {status} in {seconds:.1f} s", flush=True)
        summary.append({"notebook": source.name, "status": status, "seconds": round(seconds, 1)})
        if failed and not args.keep_going:
            break
    out = ROOT / "_build" / "executed"
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_notebooks.json").write_text(json.dumps(
        {"profile": args.profile, "parameters": parameters, "notebooks": summary,
         "total_seconds": round(time.time() - total_start, 1)}, indent=2), encoding="utf-8")
    skipped = [s["notebook"] for s in summary if s["status"].startswith("skipped")]
    print(f"[run_notebooks] total {time.time() - total_start:.1f} s; "
          f"{sum(s['status'] == 'ok' for s in summary)} ok, {len(failed)} failed {failed if failed else ''}"
          + (f", {len(skipped)} skipped without pydensecrf2 {skipped}" if skipped else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
