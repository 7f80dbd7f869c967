"""Import rules of the design card: runner -> adapters -> core, a pure core, and the
simulator (``polygon_sim``) and the stand-ins (``polygon_testing``) beside the runner:
they may import the core and the adapters, the runner imports them only for its
``simulate`` and ``demo`` commands, and no package has an import cycle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
CORE_ALLOWED_THIRD_PARTY = {"msgspec"}
# Standard-library modules that do I/O or read the environment have no place in the core.
CORE_FORBIDDEN_STDLIB = {
    "asyncio", "socket", "ssl", "http", "urllib", "subprocess", "os", "shutil",
    "threading", "multiprocessing", "select", "selectors", "io", "pathlib", "random",
}  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def imported_modules(path: Path, root: Path = SRC) -> set[str]:
    """Every absolute module name ``path`` imports, ``TYPE_CHECKING`` blocks included.

    ``from a.b import c`` counts as ``a.b`` and, when ``a/b/c.py`` exists, ``a.b.c``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            base = root.joinpath(*node.module.split("."))
            names.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (base / f"{alias.name}.py").exists()
            )
    return names


def module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (module -> the modules it imports) as a path, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def package_graph(package: str, root: Path = SRC) -> dict[str, set[str]]:
    """Imports between the modules of ``package`` under ``root``."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    return {
        name: {m for m in imported_modules(path, root) if m in files and m != name}
        for name, path in files.items()
    }


def modules(package: str) -> list[Path]:
    files = sorted((SRC / package).rglob("*.py"))
    assert files, f"no modules found in {package}"
    return files


@pytest.mark.parametrize("path", modules("polygon_core"), ids=lambda p: p.name)
def test_core_imports_only_stdlib_and_msgspec(path: Path) -> None:
    allowed = set(sys.stdlib_module_names) | CORE_ALLOWED_THIRD_PARTY | {"polygon_core"}
    roots = imported_roots(path)
    assert roots <= allowed, f"{path.name} imports {sorted(roots - allowed)}"
    assert not roots & CORE_FORBIDDEN_STDLIB, f"{path.name} imports I/O modules"


OUTER = {"polygon_runner", "polygon_sim", "polygon_testing"}
# The runner's modules that may import the simulator or the stand-ins: its command line
# (``simulate``) and the local try-out (``demo``: the simulator and a redis-server).
RUNNER_USES_SIM = {"__main__.py", "demo.py"}


@pytest.mark.parametrize("path", modules("polygon_adapters"), ids=lambda p: p.name)
def test_adapters_never_import_the_runner_the_simulator_or_the_stand_ins(path: Path) -> None:
    assert not imported_roots(path) & OUTER


@pytest.mark.parametrize(
    "path", modules("polygon_sim") + modules("polygon_testing"), ids=lambda p: p.name
)
def test_simulator_and_stand_ins_import_only_core_and_adapters(path: Path) -> None:
    roots = imported_roots(path)
    own = path.relative_to(SRC).parts[0]
    assert not roots & (OUTER - {own}), f"{own}/{path.name} imports {sorted(roots & OUTER)}"


@pytest.mark.parametrize("path", modules("polygon_runner"), ids=lambda p: p.name)
def test_runner_imports_the_simulator_only_for_its_commands(path: Path) -> None:
    if path.name not in RUNNER_USES_SIM:
        assert not imported_roots(path) & {"polygon_sim", "polygon_testing"}


def test_runner_holds_no_simulator_or_test_double() -> None:
    names = {p.stem for p in modules("polygon_runner")}
    misplaced = {n for n in names if n.startswith("sim") or n.startswith("upstash")}
    misplaced |= names & {"local_redis", "replay"}
    assert not misplaced, f"belongs in polygon_sim / polygon_testing: {sorted(misplaced)}"


@pytest.mark.parametrize(
    "package",
    ["polygon_core", "polygon_adapters", "polygon_runner", "polygon_sim", "polygon_testing"],
)
def test_no_import_cycle(package: str) -> None:
    graph = package_graph(package)
    assert len(graph) > 1
    assert import_cycle(graph) is None, " -> ".join(import_cycle(graph) or [])


def test_the_cycle_checker_finds_a_cycle(tmp_path: Path) -> None:
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.two import X\n"
    )
    (pkg / "two.py").write_text("from pkg import one\n")
    graph = package_graph("pkg", tmp_path)
    assert import_cycle(graph) == ["pkg.one", "pkg.two", "pkg.one"]


def test_the_checker_catches_a_bad_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import redis\nfrom polygon_runner import settings\nfrom . import x\n")
    assert imported_roots(bad) == {"redis", "polygon_runner"}


def test_core_imports_cleanly_without_service_packages() -> None:
    """Importing the whole core must not pull any adapter library into sys.modules."""
    import subprocess

    code = (
        "import sys, importlib, pkgutil, polygon_core\n"
        "for m in pkgutil.iter_modules(polygon_core.__path__):\n"
        "    importlib.import_module('polygon_core.' + m.name)\n"
        "bad = [n for n in ('redis', 'websockets', 'aiobotocore', 'aiohttp', 'botocore',"
        " 'dependency_injector') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_service_start_loads_no_tool() -> None:
    """``polygon-sink run`` imports the CLI and the container, never the simulator, replay,
    demo or test doubles (they are imported by their own commands only)."""
    import subprocess

    code = (
        "import sys, polygon_runner.__main__, polygon_runner.container\n"
        "bad = sorted(n for n in sys.modules if n.startswith(('polygon_sim', 'polygon_testing',"
        " 'polygon_runner.demo')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
