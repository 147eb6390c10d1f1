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
