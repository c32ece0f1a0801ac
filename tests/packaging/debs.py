"""Shared by the package tests: the repo, the build script, and how the upgrade
packages are derived from what `make deb` built."""

from __future__ import annotations

import importlib.util
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 900  # cold: pip downloads every runtime dependency once
# A line the "new release" adds to the shipped config, so dpkg sees the maintainer's
# version of the conffile change too.
NEW_RELEASE_LINE = "# shipped by the next release: a new commented option\n"


def load_build_script() -> ModuleType:
    """packaging/ is not a Python package (the name would shadow PyPI's `packaging`)."""
    spec = importlib.util.spec_from_file_location("build_deb", REPO / "packaging/build_deb.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*cmd: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in cmd], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class Debs:
    v1: Path  # what `make deb` built
    v2: Path  # a later version whose shipped config.yaml changed
    v3: Path  # a later version still, shipping the same config.yaml as v2
    version: str  # v1's Debian version


def repack(deb: Path, dest: Path, version: str, work: Path, config_line: str | None) -> Path:
    """The same payload under another version (an upgrade as dpkg sees one)."""
    tree = work / version
    run("dpkg-deb", "-R", deb, tree)
    control = tree / "DEBIAN/control"
    lines = control.read_text().splitlines(keepends=True)
    control.write_text(
        "".join(f"Version: {version}\n" if ln.startswith("Version:") else ln for ln in lines)
    )
    if config_line is not None:
        with (tree / "etc/floorgate/config.yaml").open("a") as config:
            config.write(config_line)
    output = dest / f"floorgate_{version}.deb"
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", tree, output)
    return output
