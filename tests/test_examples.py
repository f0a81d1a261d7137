"""The examples run, and every Python block in the README and docs/ runs and prints what the
page says it prints."""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(python|text)\n(.*?)```", re.S)


def test_quickstart_example_learns_xor():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "∂L/∂W1 = xᵀ·δ1" in done.stdout
    assert "XOR predictions" in done.stdout


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_code_runs_and_prints_what_it_shows(page):
    blocks = BLOCK.findall(page.read_text())
    namespace: dict = {}
    for index, (kind, code) in enumerate(blocks):
        if kind != "python":
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{page.name} block {index}", "exec"), namespace)
        shown = blocks[index + 1] if index + 1 < len(blocks) else None
        if shown and shown[0] == "text" and printed.getvalue():
            assert printed.getvalue().strip() == shown[1].strip(), f"{page.name} block {index} prints something else"
