#!/usr/bin/env bash
# The multi-node run on this CPU machine, as docs/multinode/ records it: a two-node Ray cluster of
# Ray's own (tests/ray_cluster.py; node b's raylet in a 3 GiB memory cgroup) and the tiny model,
# tensor parallel 2 over the Ray backend, measured by `kvprobe measure --ray-address`.
#
#   scripts/multinode_cpu.sh OUT      # OUT/models.yaml, OUT/results/, OUT/measure.log
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/multinode_cpu.sh OUT}
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # Ray's one-machine switch: every node on 127.0.0.1
mkdir -p "$out"
state=$(mktemp -d)/state.json
.venv/bin/python tests/ray_cluster.py "$state" --squeeze-b $((3 << 30)) >/dev/null 2>&1 &
cluster=$!
trap 'kill $cluster; wait $cluster' EXIT
for _ in $(seq 180); do [ -f "$state" ] && break; sleep 1; done
address=$(.venv/bin/python -c "import json, sys; print(json.load(open(sys.argv[1]))['address'])" "$state")
.venv/bin/python - "$out" <<'PY'
import sys
from pathlib import Path

import yaml

shipped = yaml.safe_load(Path("models.yaml").read_text())
(entry,) = [m for m in shipped["models"] if m["name"] == "tiny-llama"]
entry = {**entry, "tensor_parallel_size": 2, "extra_engine_args": {"distributed_executor_backend": "ray"}}
text = yaml.safe_dump({"defaults": shipped["defaults"], "models": [entry]}, sort_keys=False)
Path(sys.argv[1], "models.yaml").write_text(text.replace("configs/tiny-llama", "../../../configs/tiny-llama"))
PY
set +e
.venv/bin/kvprobe measure "$out/models.yaml" --out "$out/results" --searches reference,u_max \
  --ray-address "$address" 2>&1 | tee "$out/measure.log"
echo "kvprobe measure exited ${PIPESTATUS[0]}" | tee -a "$out/measure.log"
