"""The house: every import in ``src/vauban`` goes down a layer (docs/architecture.md), none in circles.

Read from the source text (lazy imports inside functions included), so a new module that reaches
up a layer, or two modules that import each other, fail here rather than in review.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vauban"

# package -> layer, bottom to top; the faces (top-level modules and cli/) are above them all
LAYERS = {
    "core": 1,
    "model": 2,
    "text": 2,
    "runtime": 3,
    "judge": 4,
    "capability": 4,
    "edit": 5,
    "direction": 6,
    "methods": 7,
    "exports": 8,
    "evaluation": 9,
    "search": 10,
    "cli": 11,
}
FACE = 11


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The vauban modules (dotted, under ``vauban``) that ``path`` imports, lazily or not."""
    return imports_of(module_name(path), path.read_text(encoding="utf-8"), package=path.name == "__init__.py")


def imports_of(name: str, source: str, package: bool = False) -> set[str]:
    """The vauban modules that module ``name``'s ``source`` imports; ``""`` is the top package ``vauban``."""
    package_name = name if package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_name.split(".") if package_name else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("vauban"):
                target = node.module.removeprefix("vauban").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import arch` imports the module vauban.model.arch
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if resolve(sub) else target)
        elif isinstance(node, ast.Import):
            found |= {"" for a in node.names if a.name == "vauban"}
            found |= {a.name.removeprefix("vauban.") for a in node.names if a.name.startswith("vauban.")}
    return {t for t in found if resolve(t)}  # "" (the top package, a face) resolves to its __init__


def resolve(dotted: str) -> Path | None:
    base = SRC.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def layer(dotted: str) -> int:
    return LAYERS.get(dotted.split(".")[0], FACE) if "." in dotted or dotted in LAYERS else FACE


GRAPH = {module_name(p): imports(p) for p in sorted(SRC.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m))
def test_every_import_goes_down_a_layer(module):
    top = module.split(".")[0]
    upward = [
        t
        for t in GRAPH[module]
        if t.split(".")[0] != top and layer(t) >= layer(module) and layer(module) != FACE
    ]
    assert not upward, f"vauban.{module} (layer {layer(module)}) imports {upward} from its layer or above"


@pytest.mark.parametrize(
    "source",
    ["from .. import __version__", "from vauban import cut", "import vauban", "from ..quick import load"],
)
def test_importing_the_top_package_counts_as_upward(source):
    """A layer's module that reads the top package (``vauban/__init__``, a face) reaches up: caught."""
    found = imports_of("exports.exporting", source)
    assert found and all(layer(t) == FACE for t in found), found


def test_no_import_circles():
    """No module reaches itself by following imports (a package's ``__init__`` counts as a module)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == node or nxt == "" or node.startswith(nxt + "."):  # a package's own __init__
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
