#!/usr/bin/env bash
# The committed CPU experiment's HTML report as a reader's first screen sees it (1280x900), taken
# by headless Chromium: docs/experiments/cpu-2026-11-26/report/first-screen.png. The answer (the
# report's first sentence and its chart) must be visible in it.
#
#   scripts/screenshot_report.sh [REPORT_HTML] [OUT_PNG]
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-docs/experiments/cpu-2026-11-26/report/report.html}"
out="${2:-docs/experiments/cpu-2026-11-26/report/first-screen.png}"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1280,900 --screenshot="$(pwd)/$out" "file://$(pwd)/$report" 2>/dev/null
test -s "$out"
echo "$out"
