#!/usr/bin/env bash
# Copy the alert rules and generated dashboards into the Helm chart (helm can only read files inside
# a chart). tests/test_helm.py fails when the copies differ from alerts/ and dashboards/.
set -euo pipefail
cd "$(dirname "$0")/.."
cp alerts/driftline-rules.yml helm/driftline/files/driftline-rules.yml
cp dashboards/*.json helm/driftline/files/dashboards/
echo "synced alerts and dashboards into helm/driftline/files"
