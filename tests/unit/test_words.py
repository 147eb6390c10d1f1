"""Words that stay true: every repository path a comment, docstring or document names exists.

Files move (the settings module left the worker's folder for the core, the
chart's tests went into ``tests/k8s/``) and the words that named them stayed
behind.  This reads every tracked text file for paths under the
repository's top-level folders and checks each one.  The installed package
holds what runs in production only, the same folders the image copies.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

from testing.processes import REPO

TOP_LEVEL = ("workqueue", "api", "worker", "cli", "loadtest", "testing", "dev", "bench", "tests", "charts",
             "deploy", "docs", "scripts", ".ci")  # fmt: skip
# A path: a top-level folder, then name characters; not part of a URL or a longer word.
PATH = re.compile(r"(?<![\w./:@-])((?:" + "|".join(map(re.escape, TOP_LEVEL)) + r")/[\w.-]+(?:/[\w.-]+)*/?)")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".tpl", ".txt", ".sh", ".toml", ".cfg", ".json", ""}
PRODUCTION = {"workqueue", "api", "worker", "cli", "loadtest"}


def tracked_text_files() -> list[str]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if (REPO / n).suffix in TEXT_SUFFIXES and (REPO / n).is_file()]


TEMPLATES = REPO / "charts" / "workqueue" / "templates"  # chart comments name templates relative to it


def names_a_file_or_folder(path: str) -> bool:
    """``api/routes.py`` or ``tests/k8s/``; not prose such as "the api/worker containers"."""
    return path.endswith("/") or "." in path.rsplit("/", 1)[-1]


def exists(path: str) -> bool:
    path = path.rstrip("/")
    return any((base / path).exists() for base in (REPO, TEMPLATES))


def test_every_repository_path_named_in_the_tree_exists():
    missing = []
    for name in tracked_text_files():
        text = (REPO / name).read_text(errors="replace")
        for match in PATH.finditer(text):
            path = match.group(1).rstrip(".")  # a sentence's full stop
            if names_a_file_or_folder(path) and not exists(path):
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"{name}:{line}: {path}")
    assert missing == [], "paths that do not exist:\n" + "\n".join(missing)


def test_the_installed_package_is_what_the_image_ships():
    packages = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert {name.split(".")[0] for name in packages} == PRODUCTION  # and their subpackages (api.dashboard)
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", (REPO / "Dockerfile").read_text(), re.M))
    assert copied == PRODUCTION, "the image copies the production folders, no more"
