"""Installing from what exists: every runtime dependency of pyproject.toml has a wheel for the DGX
Spark (aarch64, Python 3.12), and the Dockerfile installs kvprobe with pyproject's one dependency list."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import tomllib
from packaging.requirements import Requirement

from conftest import ROOT, needs_podman
from offline_base import make_root

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.network
@pytest.mark.skipif(not pypi_reachable(), reason="no network to PyPI")
def test_every_runtime_dependency_has_an_aarch64_wheel_for_python_3_12(tmp_path):
    dependencies = [entry.split("#")[0].strip() for entry in PYPROJECT["project"]["dependencies"]]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(tmp_path)]
    command += ["--platform", "manylinux2014_aarch64", "--python-version", "3.12", "--implementation", "cp"]
    done = subprocess.run([*command, *dependencies], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = [path.name for path in tmp_path.glob("*.whl")]
    assert all("aarch64" in name or name.endswith("-none-any.whl") for name in wheels), wheels
    assert len(wheels) >= len(dependencies)


def test_the_dockerfile_installs_kvprobe_with_pyprojects_dependency_list():
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ${PIP_ARGS} /opt/kvprobe" in dockerfile
    assert "--no-deps" not in dockerfile  # no second, hand-written list
    for dependency in PYPROJECT["project"]["dependencies"]:
        name = dependency.split(">")[0].split("=")[0].strip()
        assert name not in dockerfile.split("FROM", 1)[1], f"{name} is listed a second time in the Dockerfile"


@needs_podman
@pytest.mark.container
def test_the_dockerfile_builds_on_a_base_made_offline_and_runs_kvprobe(tmp_path):
    """docker/Dockerfile, built by podman on tests/offline_base.py's image (no registry, pip offline):
    kvprobe's layer installs with pyproject's dependency list and `kvprobe --version` runs inside."""
    tag = f"localhost/kvprobe-offline-base:{tmp_path.name.lower()}"
    built = f"localhost/kvprobe-dockerfile:{tmp_path.name.lower()}"
    requirements = [Requirement(entry).name for entry in PYPROJECT["project"]["dependencies"]]
    environment = make_root(tmp_path / "root", requirements)
    changes = [f"--change=ENV {name}={value}" for name, value in environment.items()]
    try:
        archive = tmp_path / "root.tar"
        subprocess.run(["tar", "-C", str(tmp_path / "root"), "-cf", str(archive), "."], check=True, timeout=300)
        imported = subprocess.run(["podman", "import", *changes, str(archive), tag], capture_output=True, timeout=300)
        assert imported.returncode == 0, imported.stderr.decode()[-2000:]
        build = ["podman", "build", "--runtime", "runc", "--network", "none", "--layers=false", "-t", built]
        build += ["-f", "docker/Dockerfile"]
        build += ["--build-arg", f"VLLM_IMAGE={tag}", "--build-arg", "PIP_ARGS=--no-index --no-build-isolation", "."]
        done = subprocess.run(build, capture_output=True, text=True, cwd=ROOT, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        run = ["podman", "run", "--rm", "--runtime", "runc", "--network", "none", built, "kvprobe", "--version"]
        version = subprocess.run(run, capture_output=True, text=True, timeout=300)
        assert version.returncode == 0, version.stderr[-2000:]
        assert PYPROJECT["project"]["version"] in version.stdout
    finally:
        subprocess.run(["podman", "rmi", "--force", built, tag], capture_output=True)
