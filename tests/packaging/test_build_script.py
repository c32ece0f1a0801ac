"""The build script's own logic, without building: version mapping, relocation of a
venv, and the check that no build-machine path is left in the package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.packaging.debs import load_build_script

build_deb = load_build_script()


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.dev1", "1.0a1"),
        ("1.0a1", "1.0b2"),
        ("1.0b2", "1.0rc1"),
        ("1.0rc1", "1.0"),
        ("1.0", "1.0+plant.1"),
        ("1.0", "1.0.1"),
        ("0.9.9", "0.10.0"),
    ],
)
def test_debian_version_sorts_like_pep440(lower: str, higher: str) -> None:
    low, high = build_deb.debian_version(lower), build_deb.debian_version(higher)
    result = subprocess.run(["dpkg", "--compare-versions", low, "lt", high], check=False)
    assert result.returncode == 0, f"dpkg sorts {low} (from {lower}) not before {high}"


def test_unsupported_version_is_refused() -> None:
    with pytest.raises(build_deb.BuildError, match="not a plain PEP 440 version"):
        build_deb.debian_version("1.0-beta")


def fake_venv(stage: Path) -> Path:
    venv = stage / "opt/floorgate"
    (venv / "bin").mkdir(parents=True)
    site = venv / "lib/python3.11/site-packages"
    info = site / "floorgate-0.1.0.dist-info"
    info.mkdir(parents=True)
    (venv / "bin/floorgate").write_text(f"#!{venv}/bin/python\nimport sys\n")
    (venv / "bin/activate").write_text(f'VIRTUAL_ENV="{venv}"\nexport VIRTUAL_ENV\n')
    (venv / "bin/python3.11").symlink_to("/usr/bin/python3.11")
    (venv / "pyvenv.cfg").write_text(f"home = /usr/bin\ncommand = python3.11 -m venv {venv}\n")
    (info / "direct_url.json").write_text('{"url": "file:///tmp/src"}')
    (info / "RECORD").write_text(
        "agent/cli/main.py,sha256=x,1\nfloorgate-0.1.0.dist-info/direct_url.json,sha256=y,2\n"
    )
    return venv


def test_relocate_rewrites_every_staging_path(tmp_path: Path) -> None:
    stage = tmp_path / "root"
    venv = fake_venv(stage)
    with pytest.raises(build_deb.BuildError, match="still names"):
        build_deb.check_no_build_paths(stage, [str(tmp_path)])

    build_deb.relocate(venv, "/opt/floorgate")

    assert (venv / "bin/floorgate").read_text().startswith("#!/opt/floorgate/bin/python\n")
    assert 'VIRTUAL_ENV="/opt/floorgate"' in (venv / "bin/activate").read_text()
    assert "venv /opt/floorgate" in (venv / "pyvenv.cfg").read_text()
    info = venv / "lib/python3.11/site-packages/floorgate-0.1.0.dist-info"
    assert not (info / "direct_url.json").exists()
    assert (info / "RECORD").read_text() == "agent/cli/main.py,sha256=x,1\n"
    build_deb.check_no_build_paths(stage, [str(tmp_path)])  # nothing left: no error


def test_check_refuses_a_symlink_into_the_build_machine(tmp_path: Path) -> None:
    stage = tmp_path / "root"
    (stage / "opt").mkdir(parents=True)
    (stage / "opt/python").symlink_to("/root/.pyenv/versions/3.11.7/bin/python3.11")
    with pytest.raises(build_deb.BuildError, match=r"links to /root/\.pyenv"):
        build_deb.check_no_build_paths(stage, ["/root/.pyenv"])


def test_private_interpreter_is_refused() -> None:
    with pytest.raises(build_deb.BuildError, match="Debian system interpreter"):
        build_deb.check_python("/root/.pyenv/versions/3.11.7/bin/python3.11")


def write_wheel(site: Path, name: str, *tags: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "WHEEL").write_text(
        "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n" + "".join(f"Tag: {t}\n" for t in tags)
    )


def test_glibc_level_is_the_newest_any_wheel_needs(tmp_path: Path) -> None:
    site = tmp_path / "lib/python3.11/site-packages"
    write_wheel(site, "pure", "py3-none-any")
    assert build_deb.glibc_needed(tmp_path) is None  # nothing compiled: no libc6 needed
    # Tagged for several levels: runs on the oldest of them (2.5).
    write_wheel(site, "old", "cp311-cp311-manylinux_2_5_x86_64", "cp311-cp311-manylinux1_x86_64")
    write_wheel(site, "mid", "cp311-cp311-manylinux2014_x86_64")
    assert build_deb.glibc_needed(tmp_path) == (2, 17)
    write_wheel(site, "new", "cp311-abi3-manylinux_2_34_x86_64")
    assert build_deb.glibc_needed(tmp_path) == (2, 34)
    # Compiled on this machine: needs this machine's glibc.
    write_wheel(site, "local", "cp311-cp311-linux_x86_64")
    assert build_deb.glibc_needed(tmp_path) == build_deb.host_glibc()
