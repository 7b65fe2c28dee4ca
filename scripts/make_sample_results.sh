#!/usr/bin/env bash
# Regenerate the committed real-run results that the report tests read (tests/data/results) and
# the sample report made from them (docs/sample-report). CPU backend, tiny model:
#   native: 3 repeats, range 0.02-0.3 (the models.yaml range: bounded so the machine stays safe)
#   podman, 4 GiB limit: 3 repeats over the whole range
# both with --throughput. About 25 minutes on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-tests/data/results}
common=(--only tiny-llama --repeats 3 --searches reference,u_max,u_min --throughput --out "$out")
.venv/bin/kvprobe measure models.yaml --label native --drop-caches "${common[@]}"
.venv/bin/kvprobe container models.yaml --runtime podman --rootfs /:O --memory 4g --shm-size 1g --memlock none \
  --range 0.05:0.99 "${common[@]}"
# Trial logs and the journal stay out of the repository; every result keeps its trials' last log lines.
rm -rf "$out/.trials" "$out/.journal" "$out"/.kvprobe-run-*.json
.venv/bin/kvprobe report "$out" --out docs/sample-report --front-matter \
  --title "KV cache, native vs a 4 GiB container (vLLM CPU backend, tiny model)"
