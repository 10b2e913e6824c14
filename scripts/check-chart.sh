#!/usr/bin/env bash
# Checks the Helm chart offline: lint, render with default and all-options values, validate the
# rendered manifests, reject bad values, validate the embedded policy with shardctl itself, and
# keep the chart README and the dashboard in step with the values and the metrics.
#   scripts/check-chart.sh [path/to/shardctl]   (default: cargo run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="$(scripts/helm-tools.sh)"
HELM="$BIN/helm"
KV="$BIN/kubernetes-validate"
PY="$(dirname "$(readlink -f "$KV")")/python"
CHART=helm/shardctl
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
if [[ $# -ge 1 ]]; then SHARDCTL=("$1"); else SHARDCTL=(cargo run --quiet --locked -p shardctl --); fi

echo "chart: helm lint --strict"
"$HELM" lint --strict "$CHART" >/dev/null
"$HELM" lint --strict "$CHART" -f "$CHART/ci/all-options-values.yaml" >/dev/null

echo "chart: render and validate (default, all options)"
"$HELM" template shardctl "$CHART" --namespace streaming >"$OUT/default.yaml"
"$HELM" template shardctl "$CHART" --namespace streaming -f "$CHART/ci/all-options-values.yaml" >"$OUT/all.yaml"
"$KV" --strict --quiet "$OUT/default.yaml" "$OUT/all.yaml"

echo "chart: the default install is a dry run"
grep -q -- "- --dry-run" "$OUT/default.yaml" || { echo "the default values must render --dry-run" >&2; exit 1; }
if grep -q -- "- --dry-run" "$OUT/all.yaml"; then echo "dryRun: false must not render --dry-run" >&2; exit 1; fi

echo "chart: values.schema.json rejects bad values"
for bad in "replicaCount=0" "dryRun=maybe" "logFormat=xml" "image.pullPolicy=Sometimes" "antiAffinity=maybe" "unknownKey=1"; do
    if "$HELM" template shardctl "$CHART" --set "$bad" >/dev/null 2>&1; then
        echo "values.schema.json accepted --set $bad" >&2
        exit 1
    fi
done

echo "chart: the policy in the default values passes shardctl validate"
"$PY" - "$OUT/default.yaml" "$OUT/policy.yaml" <<'PYEOF'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap" and "policy.yaml" in doc.get("data", {}):
        open(sys.argv[2], "w").write(doc["data"]["policy.yaml"])
        break
else:
    sys.exit("no policy ConfigMap rendered")
PYEOF
"${SHARDCTL[@]}" validate "$OUT/policy.yaml"

echo "chart: README documents every value"
"$PY" - "$CHART/values.yaml" "$CHART/README.md" <<'PYEOF'
import sys, yaml
values = yaml.safe_load(open(sys.argv[1]))
readme = open(sys.argv[2]).read()
def leaves(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("policy", "podSecurityContext", "securityContext", "resources"):
            yield from leaves(v, path + ".")
        else:
            yield path
missing = [p for p in leaves(values) if f"`{p}`" not in readme]
if missing:
    sys.exit("helm/shardctl/README.md does not document: " + ", ".join(missing))
PYEOF

echo "chart: the dashboard is valid JSON and only uses metrics the controller exports"
"$PY" - "$CHART/dashboards/shardctl.json" controller/core/src/telemetry.rs <<'PYEOF'
import json, re, sys
dash = json.load(open(sys.argv[1]))
code = open(sys.argv[2]).read()
registered = set(re.findall(r'registry\.register\(\s*"([a-z_]+)"', code))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
if not exprs:
    sys.exit("the dashboard has no queries")
used = set()
for e in exprs:
    for m in re.findall(r"shardctl_([a-z_]+)", e):
        used.add(re.sub(r"_(total|bucket|sum|count)$", "", m))
unknown = sorted(u for u in used if u not in registered)
if unknown:
    sys.exit(f"dashboard queries unknown metrics: {unknown} (registered: {sorted(registered)})")
print(f"  {len(exprs)} queries over {len(used)} metrics")
PYEOF
echo "chart: ok"
