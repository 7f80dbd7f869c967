"""Import rules of the design card: runner -> adapters -> core, and a pure core."""

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


@pytest.mark.parametrize("path", modules("polygon_adapters"), ids=lambda p: p.name)
def test_adapters_never_import_the_runner(path: Path) -> None:
    assert "polygon_runner" not in imported_roots(path)


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
