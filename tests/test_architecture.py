"""The package's shape, as `book/architecture.md` describes it: stages in layers, imports pointing down,
one owner of the run directory, no reaching into another module's private names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lungseg"
ARCHITECTURE = ROOT / "book" / "architecture.md"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layers() -> dict[str, int]:
    """``{unit: layer}`` from the table of book/architecture.md: rows ``| N | `lungseg.x`, ... | ... |``."""
    layers = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*?)\|", line)
        if m:
            for unit in re.findall(r"`(lungseg[\w.]*)`", m.group(2)):
                layers[unit] = int(m.group(1))
    return layers


def _unit_of(module: str, layers: dict[str, int]) -> str:
    """The longest unit of the table that is ``module`` or a package above it."""
    # the root package "lungseg" holds only the version: it is nobody's fallback layer
    candidates = [u for u in layers if module == u or (u != "lungseg" and module.startswith(u + "."))]
    if not candidates:
        raise AssertionError(f"{module} is in no layer of {ARCHITECTURE.name}; add it to the table")
    return max(candidates, key=len)


def _lungseg_imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` of every import of a lungseg module in ``path`` (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "lungseg":
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "lungseg"]
    return found


def test_every_module_has_a_layer_and_every_listed_unit_exists() -> None:
    layers, modules = _layers(), _modules()
    assert len(layers) >= 10, f"no layer table found in {ARCHITECTURE}"
    for module in modules:
        _unit_of(module, layers)
    for unit in layers:
        assert unit in modules, f"{ARCHITECTURE.name} lists {unit}, which does not exist"


def test_imports_point_down_the_stages() -> None:
    layers = _layers()
    wrong = []
    for module, path in _modules().items():
        unit = _unit_of(module, layers)
        for imported, names, line in _lungseg_imports(path):
            targets = [imported] if imported != "lungseg" else [f"lungseg.{n}" for n in names if n != "__version__"]
            for target in targets:
                other = _unit_of(target, layers)
                if other != unit and layers[other] >= layers[unit]:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} {unit} (layer {layers[unit]}) imports "
                                 f"{target} (layer {layers[other]})")
    assert not wrong, "imports that do not point to a lower stage:\n" + "\n".join(wrong)


def test_no_module_imports_another_modules_private_names() -> None:
    wrong = []
    for module, path in _modules().items():
        for imported, names, line in _lungseg_imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and imported != module:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {imported}")
    assert not wrong, "\n".join(wrong)


def _spelled(names: list[str], owner: str, pattern: re.Pattern[str] | None = None, root: Path = ROOT) -> list[str]:
    """``"path: name"`` for every name of ``names`` (and every match of ``pattern``) in a module of
    ``root``'s package or scripts other than ``owner`` (relative to ``root``)."""
    wrong = []
    for path in list((root / "lungseg").rglob("*.py")) + list((root / "scripts").glob("*.py")):
        if path == root / owner:
            continue
        text = path.read_text(encoding="utf-8")
        wrong += [f"{path.relative_to(root)}: {name}" for name in names if name in text]
        if pattern is not None:
            wrong += [f"{path.relative_to(root)}: {m.group(0)}" for m in pattern.finditer(text)]
    return wrong


def test_only_the_run_directory_module_spells_its_file_names() -> None:
    from lungseg.rundir import RunDir

    # RunDir.PROVENANCE is left out: a published profile folder has a provenance file of the same
    # name (lungseg.experimentdir), which is not a run's.
    names = [RunDir.CONFIG, RunDir.FINGERPRINT, RunDir.SPLIT, RunDir.HISTORY, RunDir.METRICS, RunDir.MODEL_CARD,
             "best.pt", "last.pt", "eval_crf_"]
    wrong = _spelled(names, "lungseg/rundir.py")
    assert not wrong, "run-directory file names spelled outside lungseg/rundir.py:\n" + "\n".join(wrong)


#: An experiment folder's sub-folders joined onto a path (``folder / "runs"``) or the whole-slice folder's
#: name as a string: spelled only by their owner.
EXPERIMENT_FOLDER_JOIN = re.compile(
    r"""/\s*["'](experiment|tune|whole-slice|runs|cache|05_tables)["']|["']whole-slice["']""")


def _experiment_names() -> list[str]:
    from lungseg.experimentdir import ExperimentDir, ProfileDir

    # The provenance files are left out (a run has one of the same name, lungseg.rundir); the folder
    # names are common words ("runs", "a whole-slice run"), so only their use in a path is looked for
    # (EXPERIMENT_FOLDER_JOIN).
    return [ExperimentDir.RESULTS, ExperimentDir.CELLS, ExperimentDir.DIFFERENCES, ExperimentDir.TUNE_CHOICE,
            ExperimentDir.TUNE_TABLE, ExperimentDir.COMPARISON, ProfileDir.CLAIMS.rsplit("/", 1)[-1]]


def test_only_the_experiment_directory_module_spells_its_file_names() -> None:
    wrong = _spelled(_experiment_names(), "lungseg/experimentdir.py", EXPERIMENT_FOLDER_JOIN)
    assert not wrong, "experiment file names spelled outside lungseg/experimentdir.py:\n" + "\n".join(wrong)


@pytest.mark.parametrize("spelling", ['out / "results.json"', "f'{out}/tune.csv'", 'grid / "runs" / name',
                                      "Path(out, 'whole-slice')"])
def test_the_experiment_file_check_catches_a_name_spelled_elsewhere(spelling: str, tmp_path: Path) -> None:
    """The check above fails on a module that spells an experiment file or folder itself, and not on the owner."""
    package = tmp_path / "lungseg"
    package.mkdir()
    (package / "experimentdir.py").write_text(f'RESULTS = "results.json"\npath = {spelling}\n', encoding="utf-8")
    assert not _spelled(_experiment_names(), "lungseg/experimentdir.py", EXPERIMENT_FOLDER_JOIN, root=tmp_path)
    (package / "elsewhere.py").write_text(f"path = {spelling}\n", encoding="utf-8")
    wrong = _spelled(_experiment_names(), "lungseg/experimentdir.py", EXPERIMENT_FOLDER_JOIN, root=tmp_path)
    assert wrong and all(w.startswith("lungseg/elsewhere.py: ") for w in wrong), wrong


@pytest.mark.parametrize("equation", range(1, 15))
def test_every_equation_of_the_paper_is_located(equation: int) -> None:
    """The "where is eq. (N)" table names an existing object for every equation of the paper."""
    import importlib

    rows = [line for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines()
            if re.match(rf"\|\s*eq\. \({equation}\)\s*\|", line)]
    assert rows, f"eq. ({equation}) is missing from the table in {ARCHITECTURE.name}"
    objects = re.findall(r"`(lungseg\.[\w.]+)`", rows[0])
    assert objects, f"eq. ({equation}): no lungseg object named"
    for dotted in objects:
        module, _, attr = dotted.rpartition(".")
        try:
            assert hasattr(importlib.import_module(module), attr), dotted
        except ModuleNotFoundError:
            importlib.import_module(dotted)


#: A module a newcomer can read in one sitting, a function that fits on a screen (issue 23).
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_short() -> None:
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines (module limit {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {lines} lines (limit {MAX_FUNCTION_LINES})")
    assert not too_long, "split these into named steps:\n" + "\n".join(too_long)


def _import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` within lungseg, counting imports inside functions too."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {t for t in map(owner, targets) if t and t != module}
    return graph


def test_no_import_cycles_even_inside_functions() -> None:
    graph, cycles = _import_graph(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [module, target]) if target in path
                              else f"{module} -> {target}")
            elif target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
