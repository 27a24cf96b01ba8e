#!/usr/bin/env bash
# The Prometheus alert rules: `promtool check rules` (syntax, PromQL) and `promtool test rules`
# (each alert fires where it should and not where it should not). promtool comes with Debian's
# `prometheus` package (.ci/run installs it). Reads and writes nothing in HOME.
set -euo pipefail

command -v promtool >/dev/null 2>&1 || {
    echo "promtool.sh: promtool not found; apt-get install prometheus (it ships promtool)" >&2
    exit 2
}
cd "$(dirname "${BASH_SOURCE[0]}")/../../deploy/prometheus"
promtool check rules alerts.yml
promtool test rules alerts.test.yml backups.test.yml
