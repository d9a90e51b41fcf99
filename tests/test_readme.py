"""The README's examples must run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README should show the core driven by hand"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
