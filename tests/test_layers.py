"""Data flows one way (config -> trials -> results -> report), checked on the source.

kvprobe's packages and top-level modules stand in layers; a module imports only from its own
package or module and from layers below it, and no two of them import each other even through
others. Imports under `if TYPE_CHECKING:` are annotations and do not count. A new module goes into
the table below; a test that fails here names the import that runs upward.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"

# Top to bottom. Units in one row may import each other's modules, but not in a circle.
LAYERS: list[tuple[str, ...]] = [
    ("kvprobe.cli", "kvprobe.cli_options"),  # parsing and wiring
    ("kvprobe.report",),  # comparisons and documents, from result files
    ("kvprobe.experiment",),  # cells of conditions and repeats, each a measurement
    ("kvprobe.measure",),  # one measurement: searches, sessions, the result document
    ("kvprobe.output",),  # the terminal: progress, summaries, predictions
    ("kvprobe.cluster",),  # agents on Ray nodes
    ("kvprobe.trial",),  # one engine start, isolated
    ("kvprobe.engines", "kvprobe.config", "kvprobe.environment", "kvprobe.predict"),  # adapters and readers
    ("kvprobe.results",),  # record types, the store, the loader
    (
        "kvprobe",
        "kvprobe.search",
        "kvprobe.units",
        "kvprobe.vocabulary",
        "kvprobe.errors",
        "kvprobe.engine_args",
        "kvprobe.worker_protocol",
        "kvprobe.safe_io",
    ),
]
LAYER_OF = {unit: depth for depth, row in enumerate(LAYERS) for unit in row}


def unit(module: str) -> str:
    """The package (kvprobe.X) or top-level module a module belongs to."""
    return ".".join(module.split(".")[:2])


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SOURCE).with_suffix("").parts).removesuffix(".__init__")


def runtime_imports(path: Path) -> set[str]:
    """kvprobe modules `path` imports, leaving out those under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text())
    annotations = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kvprobe":
            found |= {f"kvprobe.{a.name}" for a in node.names} if node.module == "kvprobe" else {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "kvprobe"}
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        graph[module_name(path)] |= runtime_imports(path)
    return graph


def test_every_unit_has_a_layer():
    units = {unit(module) for module in import_graph()}
    assert sorted(units - set(LAYER_OF)) == []


def test_no_import_runs_upward():
    upward = [
        f"{module} imports {target}"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if unit(target) in LAYER_OF and LAYER_OF[unit(target)] < LAYER_OF[unit(module)]
    ]
    assert upward == []


def test_no_two_units_import_each_other():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in import_graph().items():
        edges[unit(module)] |= {unit(t) for t in targets if unit(t) != unit(module)}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in path:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif len(path) < len(edges):
                visit(nxt, [*path, nxt])

    for start in sorted(edges):
        visit(start, [start])
    assert circles == []


def test_the_check_sees_an_upward_import(tmp_path):
    """The contract is not vacuous: an upward import in a module is found."""
    planted = tmp_path / "kvprobe" / "results"
    planted.mkdir(parents=True)
    (planted / "bad.py").write_text("from kvprobe.report.stats import summarise\n")
    assert runtime_imports(planted / "bad.py") == {"kvprobe.report.stats"}
    assert LAYER_OF[unit("kvprobe.report.stats")] < LAYER_OF[unit("kvprobe.results.bad")]


def test_the_readmes_layout_table_names_every_package_and_module():
    """The README's Layout table matches the code: every path it names exists, and every package
    and top-level module of src/kvprobe has a row."""
    readme = (SOURCE.parent / "README.md").read_text()
    table = readme[readme.index("## Layout") :].split("\n## ", 1)[0]
    named = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert [path for path in sorted(named) if not (SOURCE.parent / path).exists()] == []
    units = {f"src/kvprobe/{p.name}" + ("/" if p.is_dir() else "") for p in (SOURCE / "kvprobe").iterdir()}
    units = {u for u in units if not u.endswith(("__init__.py", "__pycache__/", "py.typed"))}
    assert sorted(units - named) == []
