"""Every Python snippet in the README runs as printed (each in a fresh namespace, in a subprocess)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index):
    result = subprocess.run([sys.executable, "-c", SNIPPETS[index]], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"README snippet {index} failed:\n{SNIPPETS[index]}\n{result.stderr[-3000:]}"
