"""Every Python block of the README runs as pasted, in order, in one fresh interpreter.

The blocks start what they need themselves (a private PostgreSQL, the reference ML service),
as a reader on a fresh machine would; with ``DATABASE_URL`` set they use that server instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def python_blocks() -> list[str]:
    return FENCE.findall(README.read_text())


def test_the_readme_has_python_blocks() -> None:
    assert len(python_blocks()) >= 5


def test_every_python_block_of_the_readme_runs_in_order(tmp_path: Path) -> None:
    script = tmp_path / "readme.py"
    script.write_text(
        "\n".join(
            f"# --- README block {number}\n{block}"
            for number, block in enumerate(python_blocks(), 1)
        )
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
