#!/usr/bin/env python3
"""Run ``python3 submit_tasks.py`` from the image's working directory (as in the book).

The code lives in ``cli/submit_tasks.py``; it is also installed as the
``submit-tasks`` console script.
"""

from cli.submit_tasks import main

if __name__ == "__main__":
    raise SystemExit(main())
