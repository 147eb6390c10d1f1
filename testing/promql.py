"""The PromQL the chart ships (dashboard queries, alert expressions), parsed.

Parsed with promql-parser (Python bindings of the Rust promql-parser crate,
the PromQL grammar of Prometheus), so a query that Prometheus would refuse
fails here, and the metric names are read from the syntax tree's vector
selectors, not guessed with a regular expression.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

# What Grafana puts in place of its variables before it sends a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$namespace": ".*", "$queue_name": ".*"}
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?([a-zA-Z_]\w*)\)$", re.DOTALL)


def parse(expr: str) -> Any:
    import promql_parser

    return promql_parser.parse(expr)


def metric_names(expr: str) -> set[str]:
    """The metric name of every vector selector of ``expr`` (which must parse)."""
    import promql_parser

    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:  # {__name__="..."} names a metric too
                if matcher.name == "__name__":
                    names.add(matcher.value)
            return
        if isinstance(node, promql_parser.MatrixSelector):
            visit(node.vector_selector)
            return
        for attribute in ("expr", "lhs", "rhs", "param"):
            child = getattr(node, attribute, None)
            if isinstance(child, promql_parser.Expr):
                visit(child)
        for arg in getattr(node, "args", None) or []:
            visit(arg)

    visit(parse(expr))
    return names


def grafana_query(query: str) -> str:
    """A dashboard query as Prometheus receives it (variables replaced)."""
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def dashboard_queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of a Grafana dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", grafana_query(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(query.strip())
        assert match, f"variable {variable['name']}: only label_values(selector, label) is understood: {query}"
        if match.group(1):
            yield f"variable {variable['name']}", grafana_query(match.group(1))


def rule_expressions(rule_object: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(alert or record name, PromQL) of every rule of a PrometheusRule."""
    for group in rule_object["spec"]["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def load_dashboard(text: str) -> dict[str, Any]:
    return json.loads(text)


def label_uses(expr: str) -> set[tuple[str, str]]:
    """(metric, label) pairs ``expr`` relies on: labels of its selectors' matchers, and the
    labels of every ``by (...)`` aggregation for each metric selected beneath it."""
    import promql_parser

    uses: set[tuple[str, str]] = set()

    def visit(node: Any, grouping: frozenset[str]) -> set[str]:
        """The metric names under ``node``; records the uses on the way."""
        if isinstance(node, promql_parser.MatrixSelector):
            return visit(node.vector_selector, grouping)
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or ""
            labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
            uses.update((name, label) for label in labels | grouping)
            return {name}
        inner = grouping
        modifier = getattr(node, "modifier", None)
        if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
            if modifier.type == promql_parser.AggModifierType.By:
                inner = grouping | set(modifier.labels)
        names: set[str] = set()
        for attribute in ("expr", "lhs", "rhs", "param"):
            child = getattr(node, attribute, None)
            if isinstance(child, promql_parser.Expr):
                names |= visit(child, frozenset(inner))
        for arg in getattr(node, "args", None) or []:
            names |= visit(arg, frozenset(inner))
        return names

    visit(parse(expr), frozenset())
    return uses
