"""The import graph: a module imports only modules of lower layers, and docs/architecture.md shows it.

``LAYERS`` is the one order of the package, lowest first. A module may import a module listed
before it, never one after it (no doubling back, no cycles), and every module must be listed, so a
new module gets a place on purpose. The import table in docs/architecture.md is generated from the
code; when it differs this test fails and prints the table to paste:

    .venv/bin/python -m tests.test_layers      # prints the table between the markers
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "automl_dnn"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"

#: Lowest first; each entry is a module of automl_dnn (``data.reading`` is ``automl_dnn/data/reading.py``).
LAYERS = [
    "errors", "tasks", "budget", "paths", "files", "ubjson",
    "data.builtins", "data.reading", "data.target", "data.preprocessing", "data.leaks", "data.dataset", "data",
    "folds", "metrics", "config", "model", "optim", "memory_guard", "train", "space",
    "storage", "run_folder", "search_rows", "study", "objective", "workers", "search",
    "gbt_state", "gbt", "bagging", "ensemble", "model_folder", "ensemble_step", "importance", "predictor",
    "report", "figures", "report_page", "api", "sklearn", "cli", "__main__", "__init__",
]


def module_names() -> list[str]:
    """Every module of the package, named as in LAYERS."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _source(name: str) -> Path:
    path = PACKAGE.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _resolve(imported: str) -> str | None:
    """``automl_dnn.data.reading`` -> ``data.reading``; the longest listed prefix wins."""
    if imported == "automl_dnn":
        return "__init__"
    if not imported.startswith("automl_dnn."):
        return None
    parts = imported.split(".")[1:]
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    return ".".join(parts)


def _package_of(name: str) -> str:
    """The package a module's relative imports start from."""
    if name == "__init__":
        return "automl_dnn"
    if _source(name).name == "__init__.py":
        return "automl_dnn." + name
    return "automl_dnn." + name.rsplit(".", 1)[0] if "." in name else "automl_dnn"


def _imported(node: ast.AST, package: str) -> set[str]:
    """The package modules one import statement names (``from automl_dnn import metrics`` -> metrics)."""
    if isinstance(node, ast.Import):
        return {m for m in (_resolve(alias.name) for alias in node.names) if m in LAYERS}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ""
    if node.level:  # relative import
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    submodules = {m for m in (_resolve(f"{base}.{alias.name}") for alias in node.names)
                  if m in LAYERS and m != _resolve(base)}
    if submodules:
        return submodules
    return {m for m in [_resolve(base)] if m in LAYERS}


def imports_of(name: str, *, top_level_only: bool = False) -> set[str]:
    """The package modules ``name`` imports, at module level or (unless told) inside functions."""
    tree = ast.parse(_source(name).read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        found |= _imported(node, _package_of(name))
    return found - {name}


def import_table() -> str:
    """The markdown table of docs/architecture.md: each module, lowest first, and what it imports."""
    rows = ["| layer | module | imports (package modules) |", "|---|---|---|"]
    for layer, name in enumerate(LAYERS):
        if name in ("__main__", "__init__"):
            continue
        deps = sorted(imports_of(name), key=LAYERS.index)
        rows.append(f"| {layer} | `{name}` | {', '.join(f'`{d}`' for d in deps) or '-'} |")
    return "\n".join(rows)


def test_every_module_has_a_layer() -> None:
    missing = sorted(set(module_names()) - set(LAYERS))
    stale = sorted(set(LAYERS) - set(module_names()))
    assert not missing, f"modules without a place in LAYERS (tests/test_layers.py): {missing}"
    assert not stale, f"LAYERS lists modules that do not exist: {stale}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{name} imports {dep}" for name in LAYERS for dep in sorted(imports_of(name))
              if LAYERS.index(dep) > LAYERS.index(name) and name != "__init__"]
    assert not upward, "a lower layer imports a higher one: " + "; ".join(upward)


def test_the_package_root_imports_lazily() -> None:
    """``import automl_dnn`` and the CLI stay light: their package imports happen inside functions."""
    for name in ("__init__", "cli"):
        heavy = imports_of(name, top_level_only=True) - {"errors", "tasks", "paths"}
        assert not heavy, f"{name} imports {sorted(heavy)} at module level; import them inside the command"


def test_the_architecture_doc_shows_the_real_graph() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"docs/architecture.md lacks the {BEGIN} ... {END} markers"
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == import_table(), ("docs/architecture.md shows a stale import graph; paste the output of "
                                     "`.venv/bin/python -m tests.test_layers` between its markers")


if __name__ == "__main__":
    print(import_table())
