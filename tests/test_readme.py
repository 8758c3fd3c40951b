"""The README's Python examples run as written (each in a fresh interpreter, in a scratch directory), so the
documented API cannot drift from the code. A block preceded by ``<!-- readme-test: skip (reason) -->`` is not run
(the reason says what tests it instead)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(<!-- readme-test: skip[^>]*-->\n)?```python\n(.*?)```", re.S)
BLOCKS = [(m.group(2), m.group(1) is not None) for m in _BLOCK.finditer(README.read_text())]


def test_the_readme_has_examples():
    assert sum(not skip for _, skip in BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    code, skip = BLOCKS[index]
    if skip:
        pytest.skip("marked readme-test: skip in README.md")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README example {index} ({code.splitlines()[0]}) failed:\n{result.stderr[-2000:]}"
