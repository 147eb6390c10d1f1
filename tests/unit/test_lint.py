"""House style is checked, not hoped for: ruff lint and format (rules in pyproject.toml)."""

import subprocess
import sys

from testing.processes import REPO

PATHS = ["."]  # the whole tree; ruff skips .venv and git-ignored files


def test_ruff_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *PATHS], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_ruff_format_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *PATHS], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_no_file_holds_merge_conflict_markers():
    """A merge resolved in one file and not in another once left markers in ARCHITECTURE.md for a whole stop."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    marked = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if path.is_file() and path.stat().st_size < 2_000_000:
            lines = path.read_bytes().splitlines()
            if any(line.startswith((b"<<<<<<< ", b">>>>>>> ")) for line in lines):
                marked.append(name.decode())
    assert marked == [], f"unresolved merge conflict markers in {marked}"
