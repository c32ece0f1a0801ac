"""Fixtures for the package tests: the .deb built once per session with `make deb`, and
the upgrade packages derived from it."""

from __future__ import annotations

import pytest

from tests.packaging.debs import BUILD_TIMEOUT_S, NEW_RELEASE_LINE, REPO, Debs, repack, run


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    out = tmp_path_factory.mktemp("deb")
    run("make", "-s", "-C", REPO, "deb", f"DEB_DIR={out}", timeout=BUILD_TIMEOUT_S)
    built = sorted(out.glob("floorgate_*.deb"))
    assert len(built) == 1, f"make deb should build one package, found {built}"
    version = run("dpkg-deb", "-f", built[0], "Version").stdout.strip()
    work = tmp_path_factory.mktemp("repack")
    v2 = repack(built[0], out, f"{version}+test2", work, NEW_RELEASE_LINE)
    v3 = repack(v2, out, f"{version}+test3", work, None)
    return Debs(v1=built[0], v2=v2, v3=v3, version=version)
