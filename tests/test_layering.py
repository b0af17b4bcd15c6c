"""The house's layering, checked statically: every import statement in src/tandem (those inside functions
and under TYPE_CHECKING too) against one may-import table, no cycle between packages, and no private name
taken from another package.

``MAY_IMPORT`` below is the one copy of the table; the README's design notes show it between the
``layers:start`` / ``layers:end`` markers, and a test holds the two equal.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tandem"
README = Path(__file__).resolve().parents[1] / "README.md"

#: Modules every layer may use: errors, the schema's column specs, atomic file writes.
BASE = ("errors", "schema", "fsutil")
#: A front door may import anything: the command line, the Python API and their helpers.
EVERYTHING = "everything"

#: unit -> (its job, what it may import besides itself and BASE). A unit is a package under src/tandem
#: or a top-level module. The serving side (bundle, registry, inference, serve, footprint) never
#: imports the training side (data, features, learners, report, study).
MAY_IMPORT: dict[str, tuple[str, tuple[str, ...] | str]] = {
    "errors": ("the errors a user can cause", ()),
    "schema": ("column specs of a table", ("errors",)),
    "fsutil": ("atomic writes, temp folders and their writers", ("errors",)),
    "bundle": ("the contract of both lives: files, manifest, signing, row encoding, tokens, e-mail fields, "
               "numpy views of the preprocessing, in-memory tables", ()),
    "registry": ("names, versions, aliases, lineage", ("bundle",)),
    "inference": ("a bundle in ONNX Runtime; drift and explanations", ("bundle",)),
    "footprint": ("energy and CO2 of a block of work", ()),
    "serve": ("HTTP: REST, KServe v2, batching, metrics, limits", ("bundle", "inference", "registry", "footprint")),
    "client": ("a stdlib-only client of `tandem serve`", ()),
    "data": ("read tables, text, e-mail, images; infer the schema; split; the quality gate", ("bundle",)),
    "features": ("the preprocessing, fitted in numpy and written as ONNX nodes", ("data", "bundle")),
    "learners": ("model families behind one protocol, and the portfolio", ("features", "data", "bundle")),
    "report": ("the HTML report from a manifest", ("bundle", "footprint")),
    "study": ("the time-budgeted search in phases", ("data", "features", "learners", "bundle", "footprint",
                                                    "report", "inference")),
    "optimize": ("a bundle in, faster or smaller variants out, each guarded by labelled rows",
                 ("bundle", "registry", "inference", "footprint", "data", "features", "learners", "report",
                  "study")),
    "foreign": ("a model trained elsewhere in, a verified bundle out", ("bundle", "inference", "footprint", "data",
                                                                          "features", "learners", "report", "study")),
    "batch": ("batch predictions from a file to a file", ("data", "inference", "bundle")),
    "console": ("what the front doors print", ("bundle", "footprint", "registry")),
    "api": ("the Python front door", EVERYTHING),
    "cli": ("the command line front door", EVERYTHING),
    "quickstart": ("the end-to-end demo", EVERYTHING),
    "sklearn": ("scikit-learn estimators over the Python front door", ("api", "bundle", "inference")),
    "mlflow": ("MLflow models: the tandem and pyfunc flavors", ("api", "bundle", "inference", "registry")),
}
ROOT = "__init__"  # tandem/__init__.py: the lazy top-level names (train, load, check, Client)


def unit_of(module: str) -> str | None:
    """The unit of a dotted module name inside tandem (``tandem.data.readers.csv`` -> ``data``)."""
    parts = module.split(".")
    if parts[0] != "tandem":
        return None
    return parts[1] if len(parts) > 1 else ROOT


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every import statement of a file, relative ones resolved."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            # `from tandem.x import y` where y is a module or package: that module is imported too
            submodules = [n for n in names if _is_module(root, f"{base}.{n}")]
            if base != "tandem" or len(submodules) < len(names):
                found.append((node.lineno, base, [n for n in names if n not in submodules]))
            found += [(node.lineno, f"{base}.{n}", []) for n in submodules]
    return found


def _is_module(root: Path, module: str) -> bool:
    path = root.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layering_breaks(root: Path = SRC) -> list[str]:
    """Every import that breaks the table, as 'file:line: ...' (empty when the house is in order)."""
    breaks = []
    for path in sorted(root.rglob("*.py")):
        importer = unit_of(module_name(path, root))
        where = path.relative_to(root.parent)
        if importer not in MAY_IMPORT and importer != ROOT:
            breaks.append(f"{where}:1: '{importer}' is not in the may-import table: give it a row")
            continue
        allowed = EVERYTHING if importer == ROOT else MAY_IMPORT[importer][1]
        for line, module, names in imports_of(path, root):
            target = unit_of(module)
            if target is None or target == importer:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                breaks.append(f"{where}:{line}: private name {', '.join(private)} imported from another "
                              f"package ({module})")
            if allowed == EVERYTHING or target in BASE and importer not in BASE or target in allowed:
                continue
            if target == ROOT:
                breaks.append(f"{where}:{line}: imports the 'tandem' package root; import the module itself")
                continue
            breaks.append(f"{where}:{line}: '{importer}' may not import '{target}' ({module}); it may import "
                          f"{', '.join(allowed) or 'nothing'} besides {', '.join(BASE)}")
    return breaks


def unit_graph(root: Path = SRC) -> dict[str, set[str]]:
    """unit -> the units its files import (statically, anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        importer = unit_of(module_name(path, root))
        for _, module, _ in imports_of(path, root):
            target = unit_of(module)
            if target and target not in (importer, ROOT):
                graph.setdefault(importer, set()).add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every unit that can reach itself, with one path back to it."""
    found = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    found.append(path + [start])
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
    return found


def table_markdown() -> str:
    """The table as the README shows it."""
    rows = ["| unit | job | may import (besides `errors`, `schema`, `fsutil`) |", "|---|---|---|"]
    for unit, (job, allowed) in MAY_IMPORT.items():
        if unit in BASE:
            continue
        shown = "everything" if allowed == EVERYTHING else ", ".join(allowed) or "-"
        rows.append(f"| `{unit}` | {job} | {shown} |")
    return "\n".join(rows)


# -- the tests -------------------------------------------------------------------------------------
def test_the_house_follows_the_table() -> None:
    assert layering_breaks() == []


def test_no_cycle_between_packages() -> None:
    assert cycles(unit_graph()) == []


def test_the_serving_side_never_reaches_the_training_side() -> None:
    """Transitively: what a serving host runs imports nothing of data, features, learners, report or study."""
    graph = unit_graph()
    training = {"data", "features", "learners", "report", "study"}
    for unit in ("bundle", "registry", "inference", "serve", "footprint"):
        reach, todo = set(), [unit]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in reach:
                    reach.add(nxt)
                    todo.append(nxt)
        assert not reach & training, f"{unit} reaches {sorted(reach & training)}"


def test_every_unit_has_a_row() -> None:
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__init__.py"}
    assert units == set(MAY_IMPORT)


def test_the_readme_mirrors_the_table() -> None:
    text = README.read_text(encoding="utf-8")
    shown = re.search(r"<!-- layers:start -->\n(.*?)\n<!-- layers:end -->", text, re.S)
    assert shown, "README.md: the may-import table between <!-- layers:start --> and <!-- layers:end --> is missing"
    assert shown.group(1).strip() == table_markdown()


@pytest.fixture()
def planted(tmp_path: Path) -> Path:
    """A copy of the source tree, to break on purpose."""
    root = tmp_path / "tandem"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def new_breaks(planted: Path) -> list[str]:
    """The breaks of the planted tree that the real one does not have."""
    before = set(layering_breaks())
    return [b for b in layering_breaks(planted) if b not in before]


def test_a_planted_break_is_named_by_file_and_line(planted: Path) -> None:
    predictor = planted / "inference" / "predictor.py"
    lines = predictor.read_text(encoding="utf-8").splitlines()
    lines += ["", "", "def _planted(path):", "    from tandem.data.readers import read_table",
              "    return read_table(path)"]
    predictor.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert new_breaks(planted) == [
        f"tandem/inference/predictor.py:{len(lines) - 1}: 'inference' may not import 'data' (tandem.data.readers); "
        "it may import bundle besides errors, schema, fsutil"]


def test_a_planted_relative_import_and_private_name_are_caught(planted: Path) -> None:
    (planted / "bundle" / "planted.py").write_text("from ..features.preprocess import _fit_terms\n", encoding="utf-8")
    assert new_breaks(planted) == [
        "tandem/bundle/planted.py:1: private name _fit_terms imported from another package "
        "(tandem.features.preprocess)",
        "tandem/bundle/planted.py:1: 'bundle' may not import 'features' (tandem.features.preprocess); it may import "
        "nothing besides errors, schema, fsutil"]


def test_a_planted_cycle_is_found(planted: Path) -> None:
    (planted / "footprint" / "planted.py").write_text("import tandem.serve.app\n", encoding="utf-8")
    found = cycles(unit_graph(planted))
    assert ["footprint", "serve", "footprint"] in found
    assert new_breaks(planted) == [
        "tandem/footprint/planted.py:1: 'footprint' may not import 'serve' (tandem.serve.app); "
        "it may import nothing besides errors, schema, fsutil"]


def test_each_package_names_its_public_interface() -> None:
    """Every package's __init__ says what it offers (``__all__``), and every name it offers is there."""
    import importlib

    for init in sorted(SRC.glob("*/__init__.py")):
        package = importlib.import_module(f"tandem.{init.parent.name}")
        offered = getattr(package, "__all__", None)
        assert offered, f"{init.relative_to(SRC.parent)}: no __all__"
        missing = [name for name in offered if getattr(package, name, None) is None]
        assert not missing, f"{init.relative_to(SRC.parent)}: __all__ names {missing}, which it does not have"
        assert package.__doc__, f"{init.relative_to(SRC.parent)}: no docstring"
