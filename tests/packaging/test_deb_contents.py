"""What `make deb` puts in the package: control fields, files, conffiles, maintainer
scripts, and a venv that names only its final paths."""

from __future__ import annotations

import hashlib
import io
import marshal
import posixpath
import re
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from tests.packaging.debs import REPO, Debs, load_build_script, run

pytestmark = pytest.mark.timeout(1200)  # the first test builds the package (bounded)

PREFIX = "opt/floorgate"
DOC = "usr/share/doc/floorgate"
SITE = f"{PREFIX}/lib/python3.11/site-packages"
UNIT = REPO / "systemd/floorgate.service"


def _tar(deb: Path, part: str) -> tarfile.TarFile:
    data = subprocess.run(
        ["dpkg-deb", part, str(deb)], capture_output=True, check=True, timeout=300
    ).stdout
    return tarfile.open(fileobj=io.BytesIO(data))


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    return {member.name.removeprefix("./").rstrip("/"): member for member in tar.getmembers()}


@pytest.fixture(scope="module")
def data(debs: Debs) -> tarfile.TarFile:
    return _tar(debs.v1, "--fsys-tarfile")


@pytest.fixture(scope="module")
def control(debs: Debs) -> tarfile.TarFile:
    return _tar(debs.v1, "--ctrl-tarfile")


def read(tar: tarfile.TarFile, name: str) -> bytes:
    extracted = tar.extractfile(_members(tar)[name])
    assert extracted is not None, f"{name} is not a regular file"
    return extracted.read()


def field(deb: Path, name: str) -> str:
    return run("dpkg-deb", "-f", deb, name).stdout.strip()


def pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]  # type: ignore[no-any-return]


def test_control_fields_and_file_name(debs: Debs, data: tarfile.TarFile) -> None:
    build_deb = load_build_script()
    arch = run("dpkg", "--print-architecture").stdout.strip()
    version = build_deb.debian_version(str(pyproject()["version"]))
    assert field(debs.v1, "Package") == "floorgate"
    assert field(debs.v1, "Version") == version
    assert field(debs.v1, "Architecture") == arch
    assert debs.v1.name == f"floorgate_{version}_{arch}.deb"
    assert field(debs.v1, "Maintainer")
    # The venv's interpreter is the one the package depends on.
    python_link = _members(data)[f"{PREFIX}/bin/python3.11"]
    assert python_link.issym() and python_link.linkname == "/usr/bin/python3.11"
    depends = [item.strip() for item in field(debs.v1, "Depends").split(",")]
    assert "python3.11" in depends
    assert "procps" in depends  # /bin/kill for the unit's ExecReload=
    # The compiled wheels (pydantic-core, orjson, ...) need at least this glibc.
    assert any(re.fullmatch(r"libc6 \(>= 2\.\d+\)", item) for item in depends), depends
    payload = sum(m.size for m in data.getmembers() if m.isfile())
    assert int(field(debs.v1, "Installed-Size")) >= payload // 1024


def test_system_files_are_in_place(data: tarfile.TarFile) -> None:
    members = _members(data)
    assert read(data, "lib/systemd/system/floorgate.service") == UNIT.read_bytes()
    sysusers = REPO / "packaging/sysusers.d/floorgate.conf"
    assert read(data, "usr/lib/sysusers.d/floorgate.conf") == sysusers.read_bytes()
    assert read(data, "etc/floorgate/config.yaml") == (REPO / "config.example.yaml").read_bytes()
    wrapper = members["usr/bin/floorgate"]
    assert wrapper.issym() and wrapper.linkname == "/opt/floorgate/bin/floorgate"
    entry = members[f"{PREFIX}/bin/floorgate"]
    assert entry.isfile() and entry.mode & 0o111
    assert read(data, f"{PREFIX}/bin/floorgate").startswith(b"#!/opt/floorgate/bin/python\n")
    # `floorgate demo` looks for the example under sys.prefix/share/floorgate.
    assert f"{PREFIX}/share/floorgate/config.example.yaml" in members
    # The status page's files, which the health server reads from the package.
    page = f"{SITE}/agent/monitoring/page"
    for name in ("index.html", "signals.html", "app.js", "style.css"):
        assert read(data, f"{page}/{name}") == (REPO / "agent/monitoring/page" / name).read_bytes()
    # The runtime only: no demo kit.
    assert [name for name in members if "floorgate_demo" in name] == []
    for doc in ("copyright", "changelog.gz", "python-packages.txt"):
        assert f"usr/share/doc/floorgate/{doc}" in members
    assert "usr/share/lintian/overrides/floorgate" in members


def _doc_links(page: str, text: str) -> list[str]:
    """The relative link targets of a shipped Markdown page, as package paths (code
    blocks, URLs and anchors within the page left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    found = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        file = target.partition("#")[0]
        if file and not re.match(r"^[a-z][a-z0-9+.-]*:", file, re.I):
            found.append(posixpath.normpath(posixpath.join(posixpath.dirname(page), file)))
    return found


def test_documentation_is_shipped_beside_the_readme(data: tarfile.TarFile) -> None:
    """README.md and docs/ side by side, as in the repository, so the README's links to
    the pages and the pages' links to each other work in /usr/share/doc/floorgate."""
    members = _members(data)
    assert read(data, f"{DOC}/README.md") == (REPO / "README.md").read_bytes()
    for page in ("install.md", "buffer.md", "configuration.md", "sources/modbus.md"):
        assert read(data, f"{DOC}/docs/{page}") == (REPO / "docs" / page).read_bytes()
    shipped = [n for n, m in members.items() if n.startswith(f"{DOC}/docs/") and m.isfile()]
    # The pages and their screenshots only: not docs/generate.py, not its templates.
    assert shipped and all(name.endswith((".md", ".png")) for name in shipped), shipped
    assert f"{DOC}/docs/img/status-page.png" in shipped  # the README shows it
    assert not [name for name in shipped if "/templates/" in name]
    # Links into README.md, config.example.yaml and docs/ resolve in the package (links
    # into the source tree, such as agent/registry.py, are for readers of the repository).
    pages = [f"{DOC}/README.md", *(name for name in shipped if name.endswith(".md"))]
    checked, broken = 0, []
    for page in pages:
        for target in _doc_links(page, read(data, page).decode()):
            relative = target.removeprefix(f"{DOC}/")
            if relative in ("README.md", "config.example.yaml") or relative.startswith("docs/"):
                checked += 1
                if target not in members:
                    broken.append(f"{page} -> {target}")
    assert not broken, broken
    assert checked > 20, checked  # the README alone links a dozen pages


def test_unit_and_package_agree(data: tarfile.TarFile) -> None:
    """The unit's commands exist in the package and its User= is the user it creates."""
    unit = UNIT.read_text()
    members = _members(data)
    commands = re.findall(r"^Exec(?:Start|StartPre)=[-@:+!]*(\S+)", unit, re.MULTILINE)
    assert commands, "the unit has no ExecStart="
    for command in commands:
        target = members.get(command.lstrip("/"))
        assert target is not None, f"the unit runs {command}, which the package does not ship"
        if target.issym():
            assert target.linkname.lstrip("/") in members
    user = re.search(r"^User=(\S+)", unit, re.MULTILINE)
    assert user is not None
    sysusers = read(data, "usr/lib/sysusers.d/floorgate.conf").decode()
    assert re.search(rf"^u\s+{user.group(1)}\s", sysusers, re.MULTILINE)


def test_config_is_the_only_conffile(control: tarfile.TarFile) -> None:
    assert read(control, "conffiles").decode().split() == ["/etc/floorgate/config.yaml"]


def test_maintainer_scripts(control: tarfile.TarFile, tmp_path: Path) -> None:
    members = _members(control)
    for name in ("postinst", "prerm", "postrm"):
        assert members[name].mode == 0o755, f"{name} must be executable"
        script = tmp_path / name
        script.write_bytes(read(control, name))
        assert script.read_text().startswith("#!/bin/sh\n")
        run("sh", "-n", script)  # parses as POSIX sh
    postinst = read(control, "postinst").decode()
    assert "/usr/lib/sysusers.d/floorgate.conf" in postinst
    assert "useradd --system" in postinst  # the path for systems without systemd


def test_ownership_and_modes(data: tarfile.TarFile) -> None:
    for member in data.getmembers():
        assert (member.uid, member.gid) == (0, 0), f"{member.name} is not owned by root"
        if not member.issym():
            assert not member.mode & 0o022, f"{member.name} is group/world writable"


def test_venv_holds_runtime_dependencies_only(data: tarfile.TarFile) -> None:
    dists = {
        re.sub(r"-[^-]+\.dist-info$", "", name.split("/")[-1]).lower().replace("_", "-")
        for name in _members(data)
        if name.startswith(SITE) and name.endswith(".dist-info")
    }
    dependencies = pyproject()["dependencies"]
    assert isinstance(dependencies, list)
    for requirement in dependencies:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in dists, f"runtime dependency {name} is missing from the venv"
    assert "floorgate" in dists
    for unwanted in ("pytest", "pytest-asyncio", "ruff", "mypy", "pip", "setuptools"):
        assert unwanted not in dists, f"{unwanted} must not be in the product's venv"


def test_no_build_machine_paths(data: tarfile.TarFile) -> None:
    """Relocation left nothing pointing at the staging dir, pyenv or the source tree."""
    needles = [b"/tmp/floorgate-deb-", b"/root/.pyenv", str(REPO).encode() + b"/"]
    for member in data.getmembers():
        if member.issym():
            assert not member.linkname.startswith(("/tmp", "/root")), member.name
            continue
        if not member.isfile():
            continue
        extracted = data.extractfile(member)
        assert extracted is not None
        content = extracted.read()
        for needle in needles:
            assert needle not in content, f"{member.name} names {needle.decode()}"


def test_bytecode_is_shipped_with_final_paths(data: tarfile.TarFile) -> None:
    pyc = read(data, f"{SITE}/agent/cli/__pycache__/main.cpython-311.pyc")
    code = marshal.loads(pyc[16:])
    assert code.co_filename == f"/{SITE}/agent/cli/main.py"


def test_md5sums_match_payload(data: tarfile.TarFile, control: tarfile.TarFile) -> None:
    sums: dict[str, str] = {}
    for line in read(control, "md5sums").decode().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    files = {name: m for name, m in _members(data).items() if m.isfile()}
    assert set(sums) == set(files) - {"etc/floorgate/config.yaml"}  # conffiles: not listed
    for name, digest in sums.items():
        extracted = data.extractfile(files[name])
        assert extracted is not None
        assert hashlib.md5(extracted.read()).hexdigest() == digest, name
