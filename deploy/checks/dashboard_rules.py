"""Turns every PromQL query of Grafana dashboards into a Prometheus rule file.

`promtool check rules` on the result parses each query with Prometheus's own parser, so a
syntax error in a panel fails the check instead of showing "bad_data" in Grafana. Grafana's
variables are replaced by values of the same shape first ($__rate_interval by a duration,
$instance and $node by regular expressions).

Usage: dashboard_rules.py OUT.yml DASHBOARD.json...
"""

import json
import re
import sys

import yaml

SUBSTITUTIONS = [
    (re.compile(r"\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}"), "5m"),
    (re.compile(r"\$__range|\$\{__range\}"), "1h"),
    (re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"), ".*"),
]


def queries(value):
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "expr" and isinstance(child, str):
                yield child
            else:
                yield from queries(child)
    elif isinstance(value, list):
        for item in value:
            yield from queries(item)


def main():
    out, paths = sys.argv[1], sys.argv[2:]
    rules = []
    for path in paths:
        with open(path) as f:
            dashboard = json.load(f)
        for index, expr in enumerate(queries(dashboard)):
            for pattern, replacement in SUBSTITUTIONS:
                expr = pattern.sub(replacement, expr)
            rules.append({"record": f"dashboard:query{len(rules)}:check", "expr": expr})
        if not rules:
            sys.exit(f"{path}: no queries found")
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f)
    print(len(rules))


if __name__ == "__main__":
    main()
