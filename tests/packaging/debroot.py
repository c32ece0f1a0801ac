"""A clean Debian root for installing the package: a cached debootstrap chroot.

The first run makes a minbase root of the host's Debian release with debootstrap (about a
minute, bounded by DEBOOTSTRAP_TIMEOUT_S) and keeps it as a tarball outside the repo; every
test root is a fresh copy of it. Packages apt downloads into a root are kept beside the
tarball too, so a warm run needs no network at all. Needs root (chroot) and debootstrap.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE_DIR = Path(os.environ.get("FLOORGATE_TEST_ROOT_CACHE", "/var/cache/floorgate-test-root"))
MIRROR = os.environ.get("FLOORGATE_TEST_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP_TIMEOUT_S = 900
MAX_AGE_S = 14 * 24 * 3600  # refresh now and then so apt's package lists match the mirror
APT_TIMEOUT_S = 600  # cold: downloads python3.11 and systemd once
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


class RootError(Exception):
    """The test root could not be made; the message says why."""


def host_release() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise RootError("/etc/os-release has no VERSION_CODENAME: not a Debian host")


def missing_prerequisites() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (chroot, debootstrap)")
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        problems.append("debootstrap is not installed (apt-get install debootstrap)")
    return problems


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs must not debootstrap at once
        yield


def _run(cmd: Sequence[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RootError(f"{what}: no result within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise RootError(f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def cached_tarball() -> Path:
    """Return the cached minbase root, making it first if it is missing or old."""
    release = host_release()
    tarball = CACHE_DIR / f"{release}-minbase.tar"
    with _locked(CACHE_DIR / ".lock"):
        if tarball.exists() and time.time() - tarball.stat().st_mtime < MAX_AGE_S:
            return tarball
        build = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE_DIR))
        try:
            root = build / "root"
            _run(
                ["debootstrap", "--variant=minbase", release, str(root), MIRROR],
                DEBOOTSTRAP_TIMEOUT_S,
                f"debootstrap {release} from {MIRROR}",
            )
            # debootstrap leaves the .debs it used behind; the lists stay for apt.
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            (root / "var/cache/apt/archives/partial").mkdir(parents=True)
            partial = tarball.with_suffix(".tar.part")
            _run(["tar", "-C", str(root), "-cf", str(partial), "."], 300, "tar of the root")
            partial.replace(tarball)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return tarball


class DebRoot:
    """A throwaway Debian root; commands run in it with chroot and a clean environment."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path) -> DebRoot:
        tarball = cached_tarball()
        path.mkdir(parents=True)
        _run(["tar", "-C", str(path), "-xf", str(tarball)], 300, "unpacking the cached root")
        shutil.copyfile("/etc/resolv.conf", path / "etc/resolv.conf")
        # A chroot has no running init: no maintainer script may start a service.
        policy = path / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        return cls(path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def file(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def command(self, cmd: Sequence[str], user: str | None = None) -> list[str]:
        """The host command that runs `cmd` inside the root (chroot and env exec it: a
        signal to the returned process reaches `cmd` itself)."""
        chroot = ["chroot"]
        if user is not None:
            uid = self.run("id", "-u", user).stdout.strip()
            gid = self.run("id", "-g", user).stdout.strip()
            chroot.append(f"--userspec={uid}:{gid}")
        env = ["env", "-i", *(f"{key}={value}" for key, value in CHROOT_ENV.items())]
        return [*chroot, str(self.path), *env, *cmd]

    def run(
        self,
        *cmd: str,
        user: str | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(cmd, user),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,  # a dpkg prompt must fail the test, not hang it
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {result.returncode} in the test root:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def copy_in(self, deb: Path) -> str:
        inside = f"/tmp/{deb.name}"
        shutil.copyfile(deb, self.file(inside))
        return inside

    def apt_install(self, deb: Path, recommends: bool = True) -> subprocess.CompletedProcess[str]:
        """Install a local .deb the way an admin would: apt resolves its Depends."""
        archives = CACHE_DIR / "archives"
        archives.mkdir(parents=True, exist_ok=True)
        for cached in archives.glob("*.deb"):
            shutil.copyfile(cached, self.file(f"/var/cache/apt/archives/{cached.name}"))
        cmd = ["apt-get", "install", "-y", "-q", self.copy_in(deb)]
        if not recommends:
            cmd.insert(2, "--no-install-recommends")
        result = self.run(*cmd, check=False, timeout=APT_TIMEOUT_S)
        if result.returncode != 0:
            # The cached package lists may name versions the mirror no longer has.
            self.run("apt-get", "update", "-q", timeout=APT_TIMEOUT_S)
            result = self.run(*cmd, timeout=APT_TIMEOUT_S)
        for fetched in self.file("/var/cache/apt/archives").glob("*.deb"):
            if not (archives / fetched.name).exists():
                shutil.copyfile(fetched, archives / fetched.name)
        return result
