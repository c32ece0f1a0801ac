"""Build the floorgate Debian package: `make deb` runs this.

The package carries a self-contained virtual environment at /opt/floorgate, built on the
Debian system interpreter (/usr/bin/python3.X) so that it runs on any Debian with that
python3.X package: a venv made from a pyenv or other private interpreter would point at a
path the customer's machine does not have.

The venv is created in a staging directory, then relocated to /opt/floorgate: the few
files that name the staging path (script shebangs, activate scripts, pyvenv.cfg) are
rewritten, bytecode is compiled with the final paths, and the build fails if the staging
path or a path of the build machine's private interpreter is still found anywhere.

The venv's Python packages are exactly those of packaging/lock/runtime.txt (`make lock`
writes it from pyproject.toml): pip installs the lock with --require-hashes, so every
version is the pinned one and every file has the pinned hash, then the project itself
with --no-deps; the build fails if the project needs anything the lock does not give.

Only the standard library is used, so any Python 3.11+ can run this script.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
UNIT = REPO / "systemd" / "floorgate.service"
DOCS = REPO / "docs"
LOCK = PACKAGING / "lock" / "runtime.txt"
PREFIX = "/opt/floorgate"
DEFAULT_PYTHON = "/usr/bin/python3.11"
DEFAULT_MAINTAINER = "floorgate maintainers <maintainers@floorgate.invalid>"
# What pip needs to build and install the project; the rest of the tree stays out.
SOURCE_ITEMS = ("pyproject.toml", "README.md", "agent", "drivers", "buffer")
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
PIP_TIMEOUT_S = 600  # the cold build downloads every dependency once; bounded all the same


class BuildError(Exception):
    """The package cannot be built; the message says what to fix."""


def debian_version(pep440: str) -> str:
    """Map a PEP 440 version to one that sorts the same way under dpkg.

    Pre-releases sort before the release in PEP 440 and need dpkg's '~' to do so:
    1.2.0rc1 -> 1.2.0~rc1; a development release sorts before those: 1.2.0.dev3 ->
    1.2.0~~dev3. A local part (+abc) is kept; anything else is refused.
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)*)(?:\.?(a|b|rc|dev)\.?(\d+))?(\+[A-Za-z0-9.]+)?", pep440)
    if not match:
        raise BuildError(f"pyproject.toml version {pep440!r} is not a plain PEP 440 version")
    release, pre, pre_number, local = match.groups()
    tilde = {"dev": "~~", None: ""}.get(pre, "~")
    return f"{release}{tilde}{pre or ''}{pre_number or ''}{local or ''}"


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def run(cmd: list[str], timeout: float = 300) -> None:
    try:
        subprocess.run(cmd, check=True, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        raise BuildError(
            f"command failed with exit code {exc.returncode}: {' '.join(cmd)}"
        ) from None
    except subprocess.TimeoutExpired:
        raise BuildError(
            f"command did not finish within {timeout:.0f} s: {' '.join(cmd)}"
        ) from None


def check_python(python: str) -> str:
    """Return the Debian package name of the interpreter (python3.11) or refuse it."""
    path = Path(python)
    if not path.is_absolute() or not str(path).startswith("/usr/bin/python3."):
        raise BuildError(
            f"{python}: the venv must be built on a Debian system interpreter "
            "(/usr/bin/python3.X), the one the package depends on"
        )
    if not path.exists():
        raise BuildError(f"{python} not found: apt-get install {path.name} {path.name}-venv")
    probe = subprocess.run(
        [python, "-c", "import ensurepip, venv"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        raise BuildError(f"{python} has no venv/ensurepip: apt-get install {path.name}-venv")
    return path.name


def copy_source(dest: Path) -> Path:
    """Copy what the wheel is built from, so building never writes into the work tree."""
    src = dest / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for item in SOURCE_ITEMS:
        origin = REPO / item
        if origin.is_dir():
            shutil.copytree(origin, src / item, ignore=ignore)
        else:
            shutil.copy2(origin, src / item)
    return src


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name: PyYAML, pyyaml and py_yaml are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


# A pin of a lock file: `name==version`, maybe `; marker`, then ` \` and its hashes.
LOCK_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def lock_pins(lock: Path) -> set[str]:
    """Every `name==version` the lock pins, names normalised (a universal lock may pin
    one name twice, under markers that exclude each other)."""
    if not lock.is_file():
        raise BuildError(f"{lock} is missing: run `make lock`")
    pins = set()
    for line in lock.read_text().splitlines():
        match = LOCK_PIN.match(line)
        if match:
            pins.add(f"{canonical_name(match[1])}=={match[2]}")
    if not pins:
        raise BuildError(f"{lock} pins nothing: run `make lock`")
    return pins


def check_matches_lock(shipped: list[str], lock: Path) -> None:
    """Everything in the venv but the project is a package the lock pins, at its version."""
    pins = lock_pins(lock)
    unpinned = []
    for item in shipped:
        name, _, version = item.partition("==")
        if canonical_name(name) != "floorgate" and f"{canonical_name(name)}=={version}" not in pins:
            unpinned.append(item)
    if unpinned:
        raise BuildError(f"the venv holds packages {lock} does not pin: {', '.join(unpinned)}")


def build_venv(
    python: str, venv: Path, source: Path, constraints: Path | None, lock: Path = LOCK
) -> None:
    run([python, "-m", "venv", str(venv)], timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    install = [*pip, "install", "--quiet", "--no-compile", "--no-warn-script-location"]
    if constraints is not None:
        install += ["--constraint", str(constraints)]
    # Runtime dependencies only, as pinned: pip refuses a file whose hash is not in the
    # lock and a dependency the lock does not pin.
    run([*install, "--require-hashes", "--requirement", str(lock)], timeout=PIP_TIMEOUT_S)
    run([*install, "--no-deps", str(source)], timeout=PIP_TIMEOUT_S)
    # The project's own requirements (pyproject.toml) are met by what the lock installed.
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise BuildError(
            f"{lock} does not satisfy pyproject.toml (run `make lock`):\n{check.stdout.strip()}"
        )
    # The product needs neither the installer nor setuptools at run time.
    run([*pip, "uninstall", "--yes", "--quiet", "pip", "setuptools"], timeout=120)


def relocate(venv: Path, final: str) -> None:
    """Rewrite the files that name the staging path so the venv works at `final`."""
    old, new = str(venv).encode(), final.encode()
    for path in [*sorted((venv / "bin").iterdir()), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
    # pip records where it installed the project from (a temporary source copy).
    for direct_url in venv.glob("lib/python3.*/site-packages/*.dist-info/direct_url.json"):
        direct_url.unlink()
        record = direct_url.with_name("RECORD")
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(line for line in lines if "/direct_url.json," not in line))


def compile_bytecode(venv: Path, stage: Path) -> None:
    # Shipped .pyc files: the service user cannot write to /opt, and without them every
    # start would compile everything again. Paths inside are the final ones.
    run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "compileall",
            "-q",
            "-j0",
            "-s",
            str(stage),
            "-p",
            "/",
            str(venv / "lib"),
        ],
        timeout=300,
    )


def files_under(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def check_no_build_paths(stage: Path, forbidden: list[str]) -> None:
    """Fail if any file still names a path that will not exist on the target machine."""
    needles = [item.encode() for item in forbidden]
    for path in files_under(stage):
        data = path.read_bytes()
        for needle in needles:
            if needle in data:
                relative = path.relative_to(stage)
                raise BuildError(f"/{relative} still names {needle.decode()!r} (relocation failed)")
    for path in stage.rglob("*"):
        if path.is_symlink():
            target = os.readlink(path)
            if any(target.startswith(item) for item in forbidden):
                raise BuildError(f"/{path.relative_to(stage)} links to {target}")


def distributions(venv: Path) -> list[str]:
    """name==version of every distribution in the venv (also shipped as a list in doc)."""
    found = []
    for info in venv.glob("lib/python3.*/site-packages/*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        found.append(f"{name}=={version}")
    return sorted(found, key=str.lower)


# glibc of the legacy manylinux tags (PEP 600 tags name it: manylinux_2_34).
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def host_glibc() -> tuple[int, int]:
    version = os.confstr("CS_GNU_LIBC_VERSION") or ""  # "glibc 2.36"
    match = re.fullmatch(r"glibc (\d+)\.(\d+)", version)
    if not match:
        raise BuildError(f"cannot tell this machine's glibc version (got {version!r})")
    return int(match[1]), int(match[2])


def glibc_needed(venv: Path) -> tuple[int, int] | None:
    """The newest glibc any compiled wheel in the venv was built for, from its tags.

    A wheel tagged for several manylinux levels runs on the oldest of them; a wheel pip
    had to compile here (linux_<arch>) needs the glibc of this machine.
    """
    needed: tuple[int, int] | None = None
    for wheel in venv.glob("lib/python3.*/site-packages/*.dist-info/WHEEL"):
        levels = []
        for line in wheel.read_text().splitlines():
            if not line.startswith("Tag:"):
                continue
            platform = line.split("-")[-1].strip()
            pep600 = re.match(r"manylinux_(\d+)_(\d+)_", platform)
            if pep600:
                levels.append((int(pep600[1]), int(pep600[2])))
            elif platform.split("_")[0] in LEGACY_MANYLINUX:
                levels.append(LEGACY_MANYLINUX[platform.split("_")[0]])
            elif platform.startswith("linux_"):
                levels.append(host_glibc())
        if levels and (needed is None or min(levels) > needed):
            needed = min(levels)
    return needed


def write_changelog(doc: Path, version: str, maintainer: str) -> None:
    """A native package's changelog.gz: one entry for this build (policy 12.7)."""
    when = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    entry = (
        f"floorgate ({version}) stable; urgency=medium\n\n"
        f"  * Release {version}; see /usr/share/doc/floorgate/README.md.\n\n"
        f" -- {maintainer}  {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(when))}\n"
    )
    path = doc / "changelog.gz"
    path.write_bytes(gzip.compress(entry.encode(), compresslevel=9, mtime=0))
    path.chmod(0o644)


def write_doc(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)


def forbidden_paths(work: Path) -> list[str]:
    """Paths of the build machine that must not leak into the package."""
    forbidden = [str(work), "/root/.pyenv"]
    # The interpreter running this script, when it is a private one (pyenv, a venv).
    if not sys.base_prefix.startswith("/usr"):
        forbidden.append(sys.base_prefix)
    return forbidden


def install_file(origin: Path, dest: Path, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(origin, dest)
    dest.chmod(mode)


def doc_pages(docs: Path = DOCS) -> list[Path]:
    """The documentation pages: docs/**/*.md, without the templates docs/generate.py fills
    in (generate.py itself is no page either), and the screenshots they show
    (docs/img/*.png)."""
    pages = [
        page
        for page in sorted(docs.rglob("*.md"))
        if "templates" not in page.relative_to(docs).parts
    ]
    return pages + sorted((docs / "img").glob("*.png"))


def lay_out_system_files(stage: Path, unit: Path) -> None:
    if not unit.is_file():
        raise BuildError(f"{unit} is missing: the package ships the systemd unit")
    install_file(unit, stage / "lib/systemd/system/floorgate.service")
    install_file(
        PACKAGING / "sysusers.d/floorgate.conf", stage / "usr/lib/sysusers.d/floorgate.conf"
    )
    example = REPO / "config.example.yaml"
    install_file(example, stage / "etc/floorgate/config.yaml")
    # `floorgate demo` finds the example under sys.prefix/share/floorgate.
    install_file(example, stage / "opt/floorgate/share/floorgate/config.example.yaml")
    doc = stage / "usr/share/doc/floorgate"
    install_file(example, doc / "config.example.yaml")
    install_file(REPO / "README.md", doc / "README.md")
    # The pages the README links to, as docs/ beside it: its relative links (docs/buffer.md)
    # and theirs (../config.example.yaml, sources/modbus.md) work as in the repository.
    # Uncompressed, unlike most of /usr/share/doc, so that the links keep working.
    pages = doc_pages()
    if not pages:
        raise BuildError(f"{DOCS} has no pages: the package ships the documentation")
    for page in pages:
        install_file(page, doc / page.relative_to(REPO))
    # Other files beside the unit (drop-in examples such as serial-port access).
    for extra in sorted(unit.parent.glob("*")):
        if extra.is_file() and extra != unit:
            install_file(extra, doc / "examples/systemd" / extra.name)
    install_file(PACKAGING / "lintian/floorgate", stage / "usr/share/lintian/overrides/floorgate")
    write_doc(
        doc / "copyright",
        f"floorgate\nCopyright {time.gmtime().tm_year} the floorgate contributors\n"
        "License: Apache-2.0 (see /usr/share/common-licenses/Apache-2.0)\n\n"
        f"{PREFIX} also holds third-party Python packages (listed in python-packages.txt);\n"
        f"each one's licence is in its {PREFIX}/lib/python3.*/site-packages/*.dist-info\n"
        "directory.\n",
    )
    bin_dir = stage / "usr/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "floorgate").symlink_to(f"{PREFIX}/bin/floorgate")


def normalise_modes(stage: Path) -> None:
    """Directories 0755, files 0644 or 0755: nothing group- or world-writable."""
    for path in stage.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        else:
            executable = path.stat().st_mode & 0o111
            path.chmod(0o755 if executable else 0o644)


def installed_size_kib(stage: Path) -> int:
    total = sum(path.stat().st_size for path in files_under(stage))
    return (total + 1023) // 1024


def write_control(stage: Path, version: str, arch: str, depends: str, maintainer: str) -> None:
    control_dir = stage / "DEBIAN"
    control_dir.mkdir()
    conffiles = (PACKAGING / "debian/conffiles").read_text()
    md5sums = []
    for path in files_under(stage):
        relative = path.relative_to(stage).as_posix()
        if relative.startswith("DEBIAN/") or f"/{relative}\n" in conffiles:
            continue
        md5sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {relative}\n")
    template_lines = (PACKAGING / "debian/control.in").read_text().splitlines(keepends=True)
    template = "".join(line for line in template_lines if not line.startswith("#"))
    control = (
        template.replace("@VERSION@", version)
        .replace("@ARCH@", arch)
        .replace("@MAINTAINER@", maintainer)
        .replace("@DEPENDS@", depends)
        .replace("@INSTALLED_SIZE@", str(installed_size_kib(stage)))
    )
    if re.search(r"@[A-Z_]+@", control):
        raise BuildError(f"control.in has a placeholder left: {control!r}")
    (control_dir / "control").write_text(control)
    (control_dir / "conffiles").write_text(conffiles)
    (control_dir / "md5sums").write_text("".join(md5sums))
    for name in ("control", "conffiles", "md5sums"):
        (control_dir / name).chmod(0o644)
    for name in MAINTAINER_SCRIPTS:
        install_file(PACKAGING / "debian" / name, control_dir / name, mode=0o755)


def build(args: argparse.Namespace) -> Path:
    python_package = check_python(args.python)
    lock_pins(args.lock)  # a missing or empty lock fails here, before the slow part
    version = args.version or debian_version(project_version())
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir.resolve() / f"floorgate_{version}_{arch}.deb"
    with tempfile.TemporaryDirectory(prefix="floorgate-deb-") as tmp:
        work = Path(tmp)
        stage = work / "root"
        venv = stage / PREFIX.lstrip("/")
        print(f"building {output.name}: venv on {args.python} ...", flush=True)
        started = time.monotonic()
        build_venv(args.python, venv, copy_source(work), args.constraints, args.lock)
        shipped = distributions(venv)
        check_matches_lock(shipped, args.lock)
        depends = [python_package]
        glibc = glibc_needed(venv)
        if glibc is not None:  # compiled extensions (pydantic-core, orjson, cryptography...)
            depends.append(f"libc6 (>= {glibc[0]}.{glibc[1]})")
        print(f"  venv: {len(shipped)} Python packages ({time.monotonic() - started:.0f} s)")
        relocate(venv, PREFIX)
        compile_bytecode(venv, stage)
        lay_out_system_files(stage, args.unit)
        write_doc(
            stage / "usr/share/doc/floorgate/python-packages.txt",
            "".join(f"{line}\n" for line in shipped),
        )
        write_changelog(stage / "usr/share/doc/floorgate", version, args.maintainer)
        normalise_modes(stage)
        check_no_build_paths(stage, forbidden_paths(work))
        write_control(stage, version, arch, ", ".join(depends), args.maintainer)
        packing = time.monotonic()
        run(
            [
                "dpkg-deb",
                "--root-owner-group",
                f"-Z{args.compression}",
                "--build",
                str(stage),
                str(output),
            ],
            timeout=600,
        )
        print(f"  dpkg-deb -Z{args.compression}: {time.monotonic() - packing:.0f} s")
    size_mib = output.stat().st_size / 2**20
    print(f"built {output} ({size_mib:.1f} MiB in {time.monotonic() - started:.0f} s)")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "dist")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help=f"default {DEFAULT_PYTHON}")
    parser.add_argument(
        "--version", help="Debian version (default: pyproject's version, in dpkg's ordering)"
    )
    parser.add_argument("--unit", type=Path, default=UNIT, help="the systemd unit to ship")
    parser.add_argument(
        "--lock",
        type=Path,
        default=LOCK,
        help="hashed requirements the venv is made of (default packaging/lock/runtime.txt)",
    )
    parser.add_argument("--constraints", type=Path, help="pip constraints file (pinned versions)")
    parser.add_argument("--compression", default="xz", choices=["xz", "gzip", "zstd", "none"])
    parser.add_argument(
        "--maintainer",
        default=os.environ.get("FLOORGATE_MAINTAINER", DEFAULT_MAINTAINER),
        help="control Maintainer field (default $FLOORGATE_MAINTAINER or a placeholder)",
    )
    try:
        build(parser.parse_args(argv))
    except BuildError as exc:
        print(f"make deb: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
