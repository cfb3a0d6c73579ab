#!/bin/bash
# The shipped Prometheus configuration and its alerting rules, checked with Prometheus' own tool:
#   promtool check config prometheus.yml   (which loads and checks alerts.yml through rule_files)
#   promtool check rules alerts.yml
#   promtool test rules alerts_test.yml    (every alert: it fires, it stays silent, it resolves)
# and every alert's severity and runbook_url: the URL's anchor must be a heading of
# docs/operations.md, and every alert must have a case where it fires, one where it stays silent
# and one where it resolves (silent later in a test that saw it fire).
#
#   prometheus_alerts_test.sh DEPLOY_PROMETHEUS_DIR DOCS_OPERATIONS_MD
set -euo pipefail
dir=$1
docs=$2
cd "$dir"
promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml
/usr/bin/python3 - "$docs" <<'PY'
import re, sys, yaml
def parse_duration(text):
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in re.findall(r"(\d+)([smhd])", str(text)))
docs = open(sys.argv[1]).read()
# GitHub's anchors: the heading lowercased, punctuation dropped, spaces as dashes.
anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.*)$", docs, re.M)}
rules = [r for g in yaml.safe_load(open("alerts.yml"))["groups"] for r in g["rules"] if "alert" in r]
tests = yaml.safe_load(open("alerts_test.yml"))["tests"]
fires, silent, resolves = set(), set(), set()
for t in tests:
    fired = set()
    for case in sorted(t.get("alert_rule_test", []), key=lambda c: parse_duration(c["eval_time"])):
        name = case["alertname"]
        if case.get("exp_alerts"):
            fires.add(name); fired.add(name)
        else:
            silent.add(name)
            if name in fired: resolves.add(name)
errors = []
for r in rules:
    name, labels, ann = r["alert"], r.get("labels", {}), r.get("annotations", {})
    if labels.get("severity") not in ("critical", "warning"):
        errors.append(f"{name}: labels.severity must be critical or warning")
    for key in ("summary", "description", "runbook_url"):
        if not ann.get(key):
            errors.append(f"{name}: annotations.{key} is missing")
    url = ann.get("runbook_url", "")
    if not url.startswith("docs/operations.md#") or url.split("#", 1)[1] not in anchors:
        errors.append(f"{name}: runbook_url {url!r} names no heading of docs/operations.md")
    if url.split("#", 1)[-1] != name.lower():
        errors.append(f"{name}: runbook_url should end in #{name.lower()}")
    if name not in fires:
        errors.append(f"{name}: alerts_test.yml has no case where it fires")
    if name not in silent:
        errors.append(f"{name}: alerts_test.yml has no case where it stays silent")
    if name not in resolves:
        errors.append(f"{name}: alerts_test.yml has no case where it fires, then resolves")
if errors:
    sys.exit("FAIL:\n  " + "\n  ".join(errors))
print(f"OK: {len(rules)} alerts, each with a severity, a runbook section, and cases where it fires, stays silent and resolves")
PY
