"""The house rules of ARCHITECTURE.md, checked on the source itself.

Imports are read with ``ast`` from every Python file of the repository (not
executed), so a rule breaks here the moment someone writes the import.
"""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.processes import REPO
from workqueue import settings

# The first-party top-level packages and modules, in the direction data flows.
PACKAGES = ("workqueue", "api", "worker", "cli", "loadtest", "testing", "dev", "bench", "tests", "submit_tasks")
SKIPPED_DIRS = {".git", ".venv", "node_modules", "__pycache__", ".hypothesis", ".pytest_cache", "build"}


def python_files() -> Iterator[Path]:
    for path in sorted(REPO.rglob("*.py")):
        if not SKIPPED_DIRS & set(path.relative_to(REPO).parts):
            yield path


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """First-party modules ``path`` imports (anywhere in the file, functions included)."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            # "from pkg import mod" may name a submodule: keep both spellings.
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in python_files()}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = {target for target in imported_modules(path) if target in modules and target != name}
    return edges


def top(module: str) -> str:
    return module.split(".")[0]


def test_the_graph_sees_the_projects_modules():
    edges = graph()
    # A scanner that found nothing would pass every rule below.
    assert {"workqueue.settings", "api.routes", "worker.main", "cli.submit_tasks"} <= set(edges)
    assert "workqueue.client" in edges["api.app"] and "worker.probes" in edges["worker.main"]


def test_no_import_circle_anywhere():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("workqueue", {"api", "worker", "cli", "loadtest", "testing", "dev", "bench", "tests"}),
        ("api", {"worker", "cli", "testing", "dev", "bench", "tests"}),
        ("cli", {"worker", "api", "testing", "dev", "bench", "tests"}),
        ("worker", {"api", "cli", "testing", "dev", "bench", "tests"}),
        ("loadtest", {"worker", "api", "cli", "testing", "dev", "bench", "tests"}),
        ("testing", {"tests", "bench"}),
        ("dev", {"tests", "bench"}),
        ("bench", {"tests"}),
        ("submit_tasks", {"worker", "api", "tests"}),
    ],
)
def test_data_flows_one_way(importer, forbidden):
    edges = graph()
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in edges.items()
        if top(source) == importer
        for target in targets
        if top(target) in forbidden
    )
    assert wrong == []


def test_no_sys_path_manipulation():
    pattern = re.compile(r"\bsys" + r"\.path\b")  # spelt in two pieces so this file does not match
    assert [str(path.relative_to(REPO)) for path in python_files() if pattern.search(path.read_text())] == []


def tracked_files() -> list[Path]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / name for name in listing.split("\0") if name and (REPO / name).is_file()]


def test_nothing_refers_to_documents_outside_the_repository():
    # Built from pieces so this file does not match itself.
    outside = re.compile("|".join([r"\.\./" + "shared", "DESIGN" + r"\.md", "STYLE" + r"\.md", "RECIPES" + r"\.md"]))
    offenders = sorted(
        str(path.relative_to(REPO)) for path in tracked_files() if outside.search(path.read_text(errors="replace"))
    )
    assert offenders == []


# -- settings: one place, one default --------------------------------------------

SHELL_DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")
SCRIPTS = ("run.sh", "celery_status.sh", "dev.sh", "scripts/podman-env.sh")


def test_scripts_defaults_agree_with_the_settings_module():
    defaults = {name: settings._shell_text(value) for name, value in settings.defaults().items()}
    compared, disagreeing = [], []
    for script in SCRIPTS:
        for name, default in SHELL_DEFAULT.findall((REPO / script).read_text()):
            if name in defaults:
                compared.append(name)
                if default != defaults[name]:
                    disagreeing.append(f"{script}: ${{{name}:-{default}}} but settings say {defaults[name]!r}")
    assert disagreeing == []
    # celery_status.sh runs without Python (a probe), so it keeps its own copy of these two.
    assert {"RUNTIME_DIR", "WORKER_HEARTBEAT_MAX_AGE"} <= set(compared)


def test_other_script_variables_are_documented_in_the_scripts_usage():
    for script in SCRIPTS:
        text = (REPO / script).read_text()
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        for name, _ in SHELL_DEFAULT.findall(text):
            if name not in settings.defaults():
                assert name in header, f"{script} reads {name}, which its usage header does not mention"


def test_the_environment_is_read_only_by_the_settings_module():
    reads = re.compile(r"os\.environ\b|os\.getenv\(")
    allowed = {
        "workqueue/settings.py",
        "workqueue/prometheus.py",  # prometheus-client's own variable, set by run.sh
    }
    offenders = []
    for path in python_files():
        relative = str(path.relative_to(REPO))
        if top(module_name(path)) in ("workqueue", "api", "worker", "cli") and relative not in allowed:
            if reads.search(path.read_text()):
                offenders.append(relative)
    assert offenders == []
