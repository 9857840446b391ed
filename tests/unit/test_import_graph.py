"""The shape of STYLE.md, checked on the source: no import cycle among the service's
modules (a module importing another at module level must not be imported back), and
a domain that imports none of the edges' libraries."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "domain")
# What the domain must not depend on: the edges, and the libraries they wrap.
NOT_IN_DOMAIN = (
    "streams",
    "faust",
    "mode",
    "aiokafka",
    "aiosmtplib",
    "sqlalchemy",
    "alembic",
    "pydantic",
    "jinja2",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported: not those in functions or
    classes, nor those under ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> Iterator[str]:
    """The dotted names ``node`` imports, in the module ``name``."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        anchor = name.split(".") if is_package else name.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    yield base
    for alias in node.names:
        yield f"{base}.{alias.name}"  # a submodule, if there is one by that name


def import_graph() -> dict[str, set[str]]:
    """Module -> the service's modules it imports at module level (importing
    ``a.b.c`` also runs ``a`` and ``a.b``)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        targets: set[str] = set()
        for node in _module_level(tree.body):
            for dotted in _imported(node, name, path.name == "__init__.py"):
                parts = dotted.split(".")
                for i in range(1, len(parts) + 1):
                    target = ".".join(parts[:i])
                    if target in known and target != name and target not in own_packages:
                        targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done:
            return None
        visiting.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle is not None:
            return cycle
    return None


def test_the_graph_sees_the_wiring() -> None:
    graph = import_graph()
    assert "streams.delivery.process" in graph["streams.bootstrap"]
    assert "streams.persistence.call_booking" in graph["streams.agents.commands"]  # from a package import a module
    assert "streams.bootstrap" not in graph["streams.delivery.process"]


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


def test_a_cycle_is_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_the_domain_imports_none_of_the_edges() -> None:
    offending = []
    for name, path in modules().items():
        if not name.startswith("domain"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported = [node.module or ""]
            else:
                continue
            offending += [f"{name}: {m}" for m in imported if m.split(".")[0] in NOT_IN_DOMAIN]
    assert offending == []


def test_only_the_entry_point_defers_imports_of_the_service() -> None:
    """A deferred import hides a cycle from the graph above; only ``cli`` (which
    nothing imports) defers its imports, to start quickly."""
    deferred = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        at_module_level = set(_module_level(tree.body))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or node in at_module_level:
                continue
            if any(d.split(".")[0] in PACKAGES for d in _imported(node, name, path.name == "__init__.py")):
                deferred.append(f"{name}:{node.lineno}")
    assert {d.split(":")[0] for d in deferred} <= {"streams.cli"}, deferred
