"""docs/tasks.md, "Add your own task", done exactly as it says, in a copy of the source tree.

The page's code block is appended to the copy's ``workqueue/tasks.py``;
then ``run.sh api`` and ``run.sh worker`` of that copy must offer the new
task over HTTP, validate its arguments, document it in ``/openapi.json`` and
run it.  Nothing else in the copy is touched: that is the claim.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from testing.processes import REPO, Api, Worker, wait_for_state

pytestmark = pytest.mark.integration

PAGE = REPO / "docs" / "tasks.md"
SECTION = "## Add your own task"


def section() -> str:
    return PAGE.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]


def readme_snippet() -> str:
    match = re.search(r"```python\n(.*?)```", section(), re.DOTALL)
    assert match, f"no python block under {SECTION!r} in {PAGE.name}"
    return match.group(1)


def copy_of_the_tree(target: Path) -> Path:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, listing.split("\0")):
        if name.split("/")[0] in ("workqueue", "api", "worker", "cli") or name in ("run.sh", "celery_status.sh"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    return target


def test_a_task_added_as_the_page_says_is_offered_validated_documented_and_run(own_vhost, backend_url, tmp_path):
    # A broker of its own: a worker of the session's (started by another test) would take the new task and
    # fail it as NotRegistered, since only this copy of the tree defines it.
    broker_url = own_vhost.url
    snippet = readme_snippet()
    name = re.search(r"^def (\w+)\(", snippet, re.MULTILINE).group(1)  # type: ignore[union-attr]
    tree = copy_of_the_tree(tmp_path / "app")
    with open(tree / "workqueue" / "tasks.py", "a") as handle:
        handle.write("\n\n" + snippet)

    worker = Worker(broker_url, backend_url, name="own-task", repo=tree).start()
    api = Api(broker_url, backend_url, repo=tree).start()
    try:
        worker.wait_ready()
        api.wait_ready()
        assert "`GET /catalogue` lists it with the docstring's first line" in section()  # what is checked here
        catalogue = requests.get(f"{api.url}/catalogue", timeout=10).json()["tasks"]
        entry = next(task for task in catalogue if task["name"] == name)
        assert entry["summary"] == "Count the words of a text."
        assert entry["params"] == ["text"]

        document = requests.get(f"{api.url}/openapi.json", timeout=10).json()
        variants = document["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
        assert {f"{name} (args)", f"{name} (kwargs)"} <= {variant["title"] for variant in variants}

        refused = requests.post(f"{api.url}/tasks", json={"task": name, "args": [42]}, timeout=10)
        assert refused.status_code == 422, refused.text
        assert "is not of type 'string'" in refused.json()["error"]["message"]

        accepted = requests.post(f"{api.url}/tasks", json={"task": name, "args": ["to be or not"]}, timeout=10)
        assert accepted.status_code == 202, accepted.text
        done = wait_for_state(api.url, accepted.json()["id"], {"SUCCESS", "FAILURE"})
        assert done["state"] == "SUCCESS" and done["result"] == 4, done
    finally:
        api.stop()
        worker.stop()
    # The repository's own tree is untouched: the new task lives only in the copy.
    assert name not in (REPO / "workqueue" / "tasks.py").read_text()
