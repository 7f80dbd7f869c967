"""The examples in docs/ run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(name: str) -> list[str]:
    text = (DOCS / name).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{name} has no python examples"
    return blocks


@pytest.mark.parametrize("index", range(len(python_blocks("library.md"))))
def test_library_examples_run(index: int) -> None:
    exec(compile(python_blocks("library.md")[index], f"library.md[{index}]", "exec"), {})
