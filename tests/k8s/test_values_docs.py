"""The chart's values are documented once, and everything else is generated from it.

values.yaml's ``## @param`` comments (Bitnami's readme-generator-for-helm
conventions) are the one source of the README's Parameters tables and of
the descriptions in values.schema.json: ``python -m dev.values_docs``
regenerates both, and this test fails when they are out of date or when a
value has no comment (the tool refuses such a values.yaml).
"""

from __future__ import annotations

import json

import pytest

from dev import values_docs


@pytest.fixture(scope="module")
def generated() -> tuple[str, str]:
    return values_docs.generate()


def test_readme_parameters_are_generated_from_values_yaml(generated: tuple[str, str]) -> None:
    readme, _ = generated
    assert "| `worker.nodeSelector`" in readme and "| `config.queueType`" in readme
    assert values_docs.README.read_text() == readme, "run `python -m dev.values_docs`"


def test_schema_descriptions_are_generated_from_values_yaml(generated: tuple[str, str]) -> None:
    _, schema = generated
    described = json.loads(schema)["properties"]["config"]["properties"]["queueType"]["description"]
    assert described.startswith("Classic or quorum (QUEUE_TYPE)")
    assert values_docs.SCHEMA.read_text() == schema, "run `python -m dev.values_docs`"
