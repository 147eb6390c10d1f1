#!/usr/bin/env python3
"""Run ``python3 submit_tasks.py`` from the image's working directory (as in the book).

The code lives in ``cli/submit_tasks.py``; it is also installed as the
``submit-tasks`` console script.  In a checkout whose ``python3`` lacks the
dependencies, the script runs again with the ``.venv`` that ``./dev.sh``
made, so the book's command works on a laptop as written.
"""

import os
import sys
from pathlib import Path

try:
    from cli.submit_tasks import main
except ImportError:
    venv_python = Path(__file__).resolve().parent / ".venv" / "bin" / "python"
    if not venv_python.is_file() or Path(sys.prefix).resolve() == venv_python.parents[1].resolve():
        raise
    os.execv(venv_python, [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])

if __name__ == "__main__":
    raise SystemExit(main())
