"""The chart's values documented once: values.yaml's ``## @param`` comments.

Bitnami's readme-generator-for-helm (npm, pinned below) reads the
``## @section``, ``## @param``, ``## @extra`` and ``## @skip`` comments of
``charts/workqueue/values.yaml``, checks that every value has one, and
writes the Parameters tables of ``charts/workqueue/README.md`` and a plain
OpenAPI schema of the values. The descriptions of that schema (and those of
``@extra`` objects) are copied into ``values.schema.json``, whose types and
constraints stay hand-written, except the parts derived from the task
catalogue (``dev/catalogue_schema.py``: task names and their arguments). Regenerate both after changing values.yaml::

    .venv/bin/python -m dev.values_docs

``tests/k8s/test_values_docs.py`` fails when they are out of date. The tool is
installed with npm (the npm registry is reachable wherever this project
runs) into ``.venv/tools/readme-generator`` on first use, ~5 s.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dev import catalogue_schema
from dev.manifests import CHART, REPO

TOOL = "@bitnami/readme-generator-for-helm@2.7.2"
TOOL_DIR = REPO / ".venv" / "tools" / "readme-generator"
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
SCHEMA = CHART / "values.schema.json"
_EXTRA = re.compile(r"^\s*## @extra ([\w.]+) (.+)$", re.MULTILINE)


def readme_generator() -> Path:
    """The tool's executable, installed with npm when missing or of another version."""
    executable = TOOL_DIR / "node_modules" / ".bin" / "readme-generator"
    stamp = TOOL_DIR / "installed"
    if executable.exists() and stamp.exists() and stamp.read_text() == TOOL:
        return executable
    shutil.rmtree(TOOL_DIR, ignore_errors=True)
    TOOL_DIR.mkdir(parents=True)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install readme-generator-for-helm (apt-get install npm)")
    subprocess.run(
        [npm, "install", "--prefix", str(TOOL_DIR), "--no-audit", "--no-fund", "--silent", TOOL],
        check=True, timeout=600,
    )  # fmt: skip
    stamp.write_text(TOOL)
    return executable


def _descriptions(schema: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{dotted key: description} of a generated schema."""
    found: dict[str, str] = {}
    for key, node in schema.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        if "description" in node:
            found[dotted] = node["description"]
        found.update(_descriptions(node, f"{dotted}."))
    return found


def _describe(schema: dict[str, Any], descriptions: dict[str, str]) -> dict[str, Any]:
    """``schema`` with the description of every documented key replaced."""
    for dotted, text in descriptions.items():
        node = schema
        for key in dotted.split("."):
            node = node["properties"][key]
        node["description"] = text
    return schema


def generate() -> tuple[str, str]:
    """(README.md, values.schema.json) as they must be."""
    with tempfile.TemporaryDirectory() as work:
        readme, generated = Path(work) / "README.md", Path(work) / "schema.json"
        shutil.copy(README, readme)
        result = subprocess.run(
            [str(readme_generator()), "--values", str(VALUES), "--readme", str(readme), "--schema", str(generated)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if result.returncode != 0:
            errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR" in line]
            said = "\n".join(errors or [result.stderr])
            raise RuntimeError(f"readme-generator-for-helm refused values.yaml:\n{said}")
        descriptions = _descriptions(json.loads(generated.read_text()))
        readme_text = readme.read_text()
    descriptions.update(dict(_EXTRA.findall(VALUES.read_text())))
    schema = catalogue_schema.apply(_describe(json.loads(SCHEMA.read_text()), descriptions))
    return readme_text, json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write() -> None:
    readme, schema = generate()
    README.write_text(readme)
    SCHEMA.write_text(schema)
    print(f"wrote {README.relative_to(REPO)} and {SCHEMA.relative_to(REPO)}")


if __name__ == "__main__":
    write()
    sys.exit(0)
