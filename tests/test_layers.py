"""The library's wings import only the wings below them (read from the source: every import, also those
inside functions), and the library never imports Airflow. A new wing is added to LAYERS with its rank."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT

LIBRARY = PROJECT / "include" / "trailguard"
# rank of each wing: a module may import wings of a lower rank and its own wing; equal ranks are peers
# that do not import each other. cli.py is on top of everything.
LAYERS = {
    "store": 0,
    "ingest": 1,
    "intel": 1,  # where an address is, threat lists: beside ingest, below detect
    "integrity": 1.5,  # digest validation: reads store and ingest; quality and report show its results
    "quality": 2,
    "detect": 2,
    "model": 3,
    "findings": 3.5,  # correlation of scored events, between the model and the report
    "flows": 2.5,  # VPC Flow Logs: reads store, ingest, quality; the network model (model) and findings read it
    "report": 4,
    "explore": 5,
    "respond": 5,
    "demo": 6,
    "cli": 7,
}


def _wing(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "trailguard" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "trailguard":  # from trailguard import store
                found += [(node.lineno, f"trailguard.{alias.name}") for alias in node.names]
    return found


def _modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(LIBRARY.rglob("*.py")):
        relative = path.relative_to(LIBRARY)
        wing = relative.parts[0].removesuffix(".py")
        if wing == "__init__":
            continue
        out.append((path, wing))
    return out


def test_every_wing_has_a_rank() -> None:
    wings = {wing for _, wing in _modules()}
    assert wings <= set(LAYERS), f"wings without a rank in LAYERS: {sorted(wings - set(LAYERS))}"


def test_wings_import_only_wings_below_them() -> None:
    wrong = []
    for path, wing in _modules():
        for line, module in _imports(path):
            target = _wing(module)
            if target is None or target == wing or target == "__version__":
                continue
            if target not in LAYERS or LAYERS[target] >= LAYERS[wing]:
                wrong.append(f"{path.relative_to(PROJECT)}:{line} ({wing}) imports {module} ({target})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_library_imports_no_airflow() -> None:
    offenders = [
        f"{path.relative_to(PROJECT)}:{line} imports {module}"
        for path, _ in _modules()
        for line, module in _imports(path)
        if module.split(".")[0] == "airflow"
    ]
    assert not offenders, "\n".join(offenders)


def test_every_wing_says_what_it_owns_and_may_import() -> None:
    for package in sorted(p for p in LIBRARY.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{package.name}/__init__.py does not say what the wing may import"
