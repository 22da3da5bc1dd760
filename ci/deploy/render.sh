#!/usr/bin/env bash
# Renders the checked-in plain manifests from the Helm chart:
#   deploy/manifests/janus.yaml        (helm template, tls.mode=existingSecret, with the Namespace)
#   deploy/manifests/monitoring.yaml   (ServiceMonitors + PrometheusRule; needs the Prometheus Operator)
#   deploy/manifests/cert-manager.yaml (self-signed CA Issuer + Certificates; needs cert-manager)
# and first copies the chart's inputs that live elsewhere in deploy/:
#   deploy/crd.yaml               -> deploy/helm/janus/crds/janusguards.yaml
#   deploy/prometheus/alerts.yaml -> deploy/helm/janus/files/alerts.yaml
# Usage: ci/deploy/render.sh [OUT_DIR]   (default deploy/manifests; the sync test renders to a temp dir)
# Env: HELM (default: helm on PATH, else /var/cache/janus-tools/bin/helm).
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-deploy/manifests}"
helm="${HELM:-$(command -v helm || echo /var/cache/janus-tools/bin/helm)}"
[ -x "$helm" ] || { echo "render.sh: helm not found; run ci/deploy/install-tools.sh" >&2; exit 1; }
chart=deploy/helm/janus
# The Kubernetes version the plain manifests are rendered for (the one ci/k8s tests against).
kube_version="${KUBE_VERSION:-v1.37.2}"
if [ "$out" = deploy/manifests ]; then
    cp deploy/crd.yaml "$chart/crds/janusguards.yaml"
    cp deploy/prometheus/alerts.yaml "$chart/files/alerts.yaml"
fi
mkdir -p "$out"
header() {
    echo "# Rendered from deploy/helm/janus by ci/deploy/render.sh; do not edit."
    echo "# $1"
}
{
    header "Install: deploy/gen-certs.sh | kubectl apply -f - ; kubectl apply --server-side -f deploy/manifests/janus.yaml (docs/install.md)"
    "$helm" template janus "$chart" --namespace janus-system --kube-version "$kube_version" --include-crds \
        --set createNamespace=true --set tls.mode=existingSecret
} > "$out/janus.yaml"
{
    header "Needs the Prometheus Operator CRDs (ServiceMonitor, PrometheusRule)."
    "$helm" template janus "$chart" --namespace janus-system --kube-version "$kube_version" \
        --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true \
        --show-only templates/monitoring.yaml
} > "$out/monitoring.yaml"
{
    header "cert-manager option (needs cert-manager >= 1.12): apply this instead of deploy/gen-certs.sh's Secrets."
    "$helm" template janus "$chart" --namespace janus-system --kube-version "$kube_version" --set tls.mode=certManager \
        --show-only templates/cert-manager.yaml
} > "$out/cert-manager.yaml"
echo "rendered $out/janus.yaml $out/monitoring.yaml $out/cert-manager.yaml" >&2
