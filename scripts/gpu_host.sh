#!/usr/bin/env bash
# Run kvprobe on the GPU test host (no registry there; vLLM comes as the offline bundle built by
# shared/gpu-host/build-vllm-bundle.sh, sent one part per transfer into /root/b).
#
#   scripts/gpu_host.sh receive PART        # copy one bundle part into /root/b
#   scripts/gpu_host.sh unpack ZSTD         # unpack /root/b/part-* into /root/site
#   scripts/gpu_host.sh native  SECONDS [measure options...]   # resumable, stops itself in time
#   scripts/gpu_host.sh cgroup  SECONDS SIZE [measure options...]   # same, inside a memory-limited cgroup v2
#   scripts/gpu_host.sh bench [bench options...]  # scripts/bench_search.py, rows into /root/bench/bench.json
#   scripts/gpu_host.sh tp2 SECONDS [measure options...]   # native, CUDA_VISIBLE_DEVICES=0,1, process list watched
#   scripts/gpu_host.sh ray2 SECONDS [measure options...]   # a two-node Ray cluster, one GPU a node, TP 2 over it
#   scripts/gpu_host.sh ray2-kill SECONDS [measure options...]   # the same; the probe SIGKILLed at its first ready, then --resume
#   scripts/gpu_host.sh experiment SECONDS FILE NAME [options...]   # kvprobe experiment into RESULTS/NAME, resumable
#   scripts/gpu_host.sh bench-lanes [bench options...]   # scripts/bench_lanes.py, rows into /root/bench/lanes.json
#   scripts/gpu_host.sh env                 # kvprobe env, text and JSON
#   scripts/gpu_host.sh pack DEST           # results and trial logs as one tarball
#
# The cgroup run is the discrete-GPU control for the container study: a cgroup v2 with
# memory.max, entered with its own cgroup and mount namespaces, so the
# probe and vLLM see the limit at /sys/fs/cgroup/memory.max exactly as inside a container
# (the group is bind-mounted over /sys/fs/cgroup, as container runtimes do).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="/root/site:$PWD/src" VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1
RESULTS=${KVPROBE_RESULTS:-/root/results}
MODEL=${KVPROBE_MODEL:-deepseek-r1-distill-qwen-7b}
MODELS=${KVPROBE_MODELS:-models.yaml}

watch_processes() {  # the process list (with arguments) every 0.25 s into FILE, until killed
  while sleep 0.25; do echo "@ $(date +%s.%N)"; ps -eo pid,ppid,pgid,sid,stat,args --no-headers | grep -v ' ps -eo\| sleep 0.25\|grep ' | cut -c1-200; done >> "$1"
}

tagged() {  # every process on this host carrying a kvprobe trial tag: pid and command
  for environ in /proc/[0-9]*/environ; do
    [ -r "$environ" ] || continue
    if tr '\0' '\n' < "$environ" 2>/dev/null | grep -q '^KVPROBE_TRIAL='; then
      pid=${environ#/proc/}; pid=${pid%/environ}
      echo "$pid $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-160)"
    fi
  done 2>/dev/null
}

ray_cluster() {  # start the two-node cluster (one GPU a node); prints its address
  rm -f /root/ray-state.json
  python3 tests/ray_cluster.py /root/ray-state.json --one-gpu-each --memory-monitor-off >> "$RESULTS/ray-cluster.log" 2>&1 &
  local cluster=$!
  for _ in $(seq 180); do [ -f /root/ray-state.json ] || ! kill -0 $cluster 2>/dev/null && break; sleep 1; done
  python3 -c "import json; print(json.load(open('/root/ray-state.json'))['address'])"
}

measure() {  # LABEL SECONDS [options...]: a measure that ends itself (SIGTERM) before the call's limit
  local label=$1 seconds=$2
  shift 2
  timeout -s TERM "$seconds" python3 -m kvprobe.cli measure "$MODELS" --only "$MODEL" --label "$label" \
    --out "$RESULTS" --resume "$@" || echo "measure exited $?"
}

case "${1:?usage: gpu_host.sh receive|unpack|native|cgroup|env|pack}" in
  receive) mkdir -p /root/b && cp "$2" /root/b/ && ls -la /root/b ;;
  unpack)
    mkdir -p /root/site
    cat /root/b/part-* | "$2" -d | tar -x -C /root/site
    # The bundle's wheels were unpacked by python's zipfile, which drops the mode bits: Ray's own
    # executables (its GCS server and raylet) are not executable until set so.
    chmod +x /root/site/ray/core/src/ray/gcs/gcs_server /root/site/ray/core/src/ray/raylet/raylet 2>/dev/null || true
    python3 -c "import vllm, sys; print('vllm', vllm.__version__, file=sys.stderr)" ;;
  native) shift; seconds=$1; shift; measure native "$seconds" "$@" ;;
  tp2)  # what survives a trial's SIGTERM: the process list every 0.25 s, set against each trial's teardown
    shift; seconds=$1; shift
    mkdir -p "$RESULTS"
    (while sleep 0.25; do echo "@ $(date +%s.%N)"; ps -eo pid,ppid,pgid,sid,stat,comm --no-headers | grep -v ' ps$\| sleep$\| grep$'; done \
      >> "$RESULTS/ps-watch.log") &
    watcher=$!
    CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1} measure native "$seconds" "$@"
    kill "$watcher"
    nvidia-smi --query-gpu=index,uuid,memory.used,memory.total --format=csv >> "$RESULTS/nvidia-smi-after.csv" ;;
  cgroup)
    shift; seconds=$1 size=$2; shift 2
    group=/sys/fs/cgroup/kvprobe-control
    grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory > /sys/fs/cgroup/cgroup.subtree_control
    mkdir -p "$group"
    echo "$size" > "$group/memory.max"
    echo $$ > "$group/cgroup.procs"
    args=$(printf ' %q' "$@")
    unshare --cgroup --mount sh -c "mount --bind $group /sys/fs/cgroup && \
      timeout -s TERM $seconds python3 -m kvprobe.cli measure $MODELS --only $MODEL --label container \
      --out $RESULTS --resume $args || echo measure exited \$?"
    ;;
  bench)
    shift
    python3 scripts/bench_search.py --model "$MODEL" --keep /root/bench --json /root/bench/bench.json "$@" ;;
  ray2|ray2-kill)
    action=$1; shift; seconds=$1; shift
    mkdir -p "$RESULTS"
    # Every node, the probe and the engine's driver on 127.0.0.1 (the driver's node is a's: 127.0.0.1)
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 VLLM_HOST_IP=127.0.0.1
    address=$(ray_cluster)
    echo "ray cluster at $address" | tee -a "$RESULTS/ray2.log"
    watch_processes "$RESULTS/ps-watch.log" &
    watcher=$!
    if [ "$action" = ray2 ]; then
      measure native "$seconds" --ray-address "$address" "$@" 2>&1 | tee -a "$RESULTS/ray2.log"
    else
      python3 -m kvprobe.cli measure "$MODELS" --only "$MODEL" --label native --out "$RESULTS" --resume \
        --ray-address "$address" "$@" > "$RESULTS/ray2-killed.log" 2>&1 &
      probe=$!
      for _ in $(seq $((seconds / 2))); do grep -q '"phase":"ready"' "$RESULTS/ray2-killed.log" && break; sleep 1; done
      sleep 2
      kill -9 "$probe"; echo "probe $probe SIGKILLed at $(date +%s.%N)" | tee -a "$RESULTS/ray2.log"
      sleep 5
      { echo "tagged processes 5 s after the SIGKILL:"; tagged; } | tee -a "$RESULTS/ray2.log"
      nvidia-smi --query-gpu=index,memory.used --format=csv | tee -a "$RESULTS/ray2.log"
      measure native "$seconds" --ray-address "$address" "$@" 2>&1 | tee -a "$RESULTS/ray2.log"
      { echo "tagged processes after --resume:"; tagged; } | tee -a "$RESULTS/ray2.log"
    fi
    kill "$watcher"
    nvidia-smi --query-gpu=index,uuid,memory.used,memory.total --format=csv | tee -a "$RESULTS/ray2.log"
    pkill -TERM -f tests/ray_cluster.py; sleep 5
    { echo "tagged processes after the cluster's shutdown:"; tagged; } | tee -a "$RESULTS/ray2.log" ;;
  experiment)
    shift; seconds=$1 file=$2 name=$3; shift 3
    mkdir -p "$RESULTS"
    resume=(); [ -f "$RESULTS/$name/experiment.json" ] && resume=(--resume)
    timeout -s TERM "$seconds" python3 -m kvprobe.cli experiment "$file" --out "$RESULTS/$name" --log-format jsonl \
      "${resume[@]}" "$@" > >(tee -a "$RESULTS/$name.log") 2>&1 || echo "experiment exited $?" ;;
  bench-lanes)
    shift
    mkdir -p /root/bench
    python3 scripts/bench_lanes.py --json /root/bench/lanes.json --keep /root/bench/lanes "$@" ;;
  env) python3 -m kvprobe.cli env; python3 -m kvprobe.cli env --json > "${2:-/dev/stdout}" ;;
  pack) tar -C "$RESULTS" -czf "$2" . && ls -la "$2" ;;
esac
