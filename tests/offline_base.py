"""A base image made offline, for building docker/Dockerfile in CI without a registry: this
machine's Python interpreter (the one the test environment's venv was made from), its standard
library, /bin/sh, the shared libraries both load, and, installed in the interpreter's own
site-packages, the distributions kvprobe depends on (with pip and setuptools), copied from the test
environment. It stands in for the vLLM image the Dockerfile is layered on: only kvprobe's layer is
proven to build (with pip offline, `--no-index`) and to run `kvprobe --version`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

# EXTERNALLY-MANAGED: Debian's marker that makes pip refuse its system Python (PEP 668).
SKIPPED_STDLIB = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "__pycache__", "EXTERNALLY-MANAGED"}
TOOLS = ("pip", "setuptools")


def shared_libraries(executable: Path) -> set[Path]:
    """The libraries `executable` loads, by the paths the loader found (ldd)."""
    listed = subprocess.run(["ldd", str(executable)], capture_output=True, text=True).stdout
    return {Path(path) for path in re.findall(r"(/\S+) \(0x", listed)}


def distributions(names: list[str]) -> dict[str, metadata.Distribution]:
    """`names` and everything they require (extras left out), as installed here."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = re.sub(r"[-_.]+", "-", pending.pop()).lower()
        if name in found:
            continue
        found[name] = distribution = metadata.distribution(name)
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def copy_into(root: Path, source: Path) -> None:
    target = root / source.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target, follow_symlinks=True)


def copy_library(root: Path, library: Path) -> None:
    """A shared library into `root` at its real path, and at the path the loader found it by."""
    copy_into(root, library.resolve())
    alias = root / library.relative_to("/")
    if library.resolve() != library and not alias.exists():
        alias.parent.mkdir(parents=True, exist_ok=True)
        alias.symlink_to(library.resolve())


def copy_distributions(target: Path, requirements: list[str]) -> None:
    """`requirements`, what they need, pip and setuptools: their files from this environment's
    site-packages into `target`."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for distribution in distributions([*requirements, *TOOLS]).values():
        for file in distribution.files or []:
            path = Path(distribution.locate_file(file)).resolve()
            if not path.is_relative_to(site):
                if path.is_relative_to(site.parent.parent.parent):  # its scripts in bin/: not needed
                    continue
                raise RuntimeError(f"{distribution.name} is installed outside {site}: {path}")
            if path.is_file():
                destination = target / path.relative_to(site)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)


def make_root(root: Path, requirements: list[str]) -> dict[str, str]:
    """The base image's root filesystem in `root`; returns the environment its image sets."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    interpreter = prefix / "bin" / version
    for library in shared_libraries(interpreter) | shared_libraries(Path("/bin/sh")):
        copy_library(root, library)
    copy_into(root, interpreter)
    copy_into(root, Path("/bin/sh").resolve())
    if not (root / "bin" / "sh").exists():
        (root / "bin").mkdir(exist_ok=True)
        (root / "bin" / "sh").symlink_to(Path("/bin/sh").resolve())
    stdlib = prefix / "lib" / version
    for entry in stdlib.iterdir():
        if entry.name not in SKIPPED_STDLIB:
            copy_into(root, entry)
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    (root / "usr" / "bin" / "python3").symlink_to(interpreter)
    (root / "tmp").mkdir(exist_ok=True)
    copy_distributions(root / (prefix / "lib" / version / "site-packages").relative_to("/"), requirements)
    for extension in [p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink()]:
        for library in shared_libraries(extension):  # what the standard library's and wheels' modules load
            if library.is_relative_to(root) or (root / library.relative_to("/")).exists() or not library.exists():
                continue  # a wheel's own (bundled beside it), copied already, or missing here too
            copy_library(root, library)
    bin_dirs = [str(prefix / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]
    return {"PATH": ":".join(dict.fromkeys(bin_dirs)), "PYTHONPATH": str(prefix / "lib" / version / "site-packages")}
