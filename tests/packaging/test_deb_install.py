"""The package in a clean Debian root (a debootstrap chroot): install with apt, run the
CLI, upgrade over an edited config, remove and purge.

No init system runs in a chroot, so the maintainer scripts take their "systemd is not
running" branches (no daemon-reload, no service start or stop); everything else —
user, directories, statoverride, conffile handling — is the real thing. One test gives a
root a systemctl that records its calls, to check what the scripts ask of systemd.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorgate_demo.receiver import EventReceiver
from tests.helpers import free_port, line_config, write_config
from tests.packaging.debroot import DebRoot, missing_prerequisites
from tests.packaging.debs import NEW_RELEASE_LINE, Debs, load_build_script

pytestmark = pytest.mark.timeout(2400)  # a cold cache runs debootstrap once (bounded)

CONFIG = "/etc/floorgate/config.yaml"


@pytest.fixture(scope="module")
def prerequisites() -> None:
    problems = missing_prerequisites()
    assert not problems, "cannot make a Debian test root: " + "; ".join(problems)


@pytest.fixture(scope="module")
def root(
    prerequisites: None, debs: Debs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DebRoot]:
    """A clean root with the package installed by apt (Recommends included: systemd)."""
    debroot = DebRoot.create(tmp_path_factory.mktemp("debroot") / "root")
    try:
        debroot.apt_install(debs.v1)
        yield debroot
    finally:
        debroot.remove()


def stat(root: DebRoot, path: str) -> str:
    return root.run("stat", "-c", "%U:%G %a", path).stdout.strip()


def test_cli_runs_in_clean_root(root: DebRoot) -> None:
    version = root.run("floorgate", "--version").stdout.strip()
    assert version == f"floorgate {load_build_script().project_version()}"
    as_root = root.run("floorgate", "check-config", CONFIG)
    assert f"{CONFIG}: configuration is valid" in as_root.stdout
    # The service's user can read its config and run the venv.
    as_service = root.run("/usr/bin/floorgate", "check-config", CONFIG, user="floorgate")
    assert f"{CONFIG}: configuration is valid" in as_service.stdout


def test_user_and_directories(root: DebRoot) -> None:
    entry = root.run("getent", "passwd", "floorgate").stdout.strip().split(":")
    assert entry[5:] == ["/var/lib/floorgate", "/usr/sbin/nologin"]
    assert int(entry[2]) < 1000, "floorgate must be a system user"
    assert stat(root, "/var/lib/floorgate") == "floorgate:floorgate 750"
    assert stat(root, "/etc/floorgate") == "root:floorgate 750"
    assert stat(root, "/etc/floorgate/credentials") == "root:root 700"
    enabled = root.run("systemctl", "is-enabled", "floorgate.service", check=False)
    # A first install must not enable the service: the config is still the demo example.
    assert enabled.stdout.strip() == "disabled"


def test_installed_unit_verifies(root: DebRoot) -> None:
    """systemd's own check of the unit as installed: its commands and user exist here."""
    result = root.run("systemd-analyze", "verify", "/lib/systemd/system/floorgate.service")
    assert result.stderr.strip() == ""


def test_native_libraries_resolve(root: DebRoot) -> None:
    libraries = root.run("find", "/opt/floorgate", "-name", "*.so*", "-type", "f").stdout.split()
    assert libraries, "the venv should hold compiled extensions (pydantic-core, orjson, ...)"
    ldd = root.run("ldd", *libraries)
    missing = [line for line in ldd.stdout.splitlines() if "not found" in line]
    assert not missing, f"libraries missing in a clean root (add to Depends): {missing}"


def test_running_writes_nothing_into_opt(root: DebRoot) -> None:
    """Shipped bytecode is valid: running as root adds no __pycache__ files to /opt."""
    root.run("floorgate", "check-config", CONFIG)
    root.run("floorgate", "--help")
    for command in ("demo", "simulate"):  # the demo kit is not in the package: say so
        refused = root.run("floorgate", command, check=False)
        assert refused.returncode == 1
        assert "needs the demo kit" in refused.stderr and "Traceback" not in refused.stderr
    packaged = set(root.run("dpkg", "-L", "floorgate").stdout.splitlines())
    present = set(root.run("find", "/opt/floorgate").stdout.splitlines())
    assert present - packaged == set()


async def test_packaged_agent_delivers_as_the_service_user(root: DebRoot, tmp_path: Path) -> None:
    """The installed agent, run as `floorgate` with the state in /var/lib/floorgate, reads
    the simulated line over Modbus TCP and delivers to a real HTTP receiver on the host's
    loopback (a chroot shares the host's network). The simulator is the demo kit's, run
    from the test environment: the package carries no demo code."""
    modbus_port, health_port = free_port(), free_port()
    config = "/etc/floorgate/line-test.yaml"
    processes: list[asyncio.subprocess.Process] = []
    async with EventReceiver() as receiver:
        line = line_config(Path("/var/lib/floorgate"), modbus_port, receiver.url, health_port)
        write_config(root.file(config), line)
        try:
            simulator = [
                sys.executable,
                "-m",
                "floorgate_demo.simulator",
                "--port",
                str(modbus_port),
            ]
            agent = root.command(["floorgate", "run", "--config", config], "floorgate")
            for name, cmd in (("simulator", simulator), ("agent", agent)):
                with (tmp_path / f"{name}.log").open("wb") as log:
                    processes.append(
                        await asyncio.create_subprocess_exec(
                            *cmd, stdout=log, stderr=asyncio.subprocess.STDOUT
                        )
                    )
            async with asyncio.timeout(90):
                await receiver.wait_for(3)
        finally:
            for process in processes:
                process.kill()  # SIGKILL: the buffer must not need a clean shutdown
                await process.wait()
            root.file(config).unlink()
    assert {"machine.state"} <= set(receiver.count_by_type())
    # Written by the service user (its mode comes from the unit's UMask=, not tested here).
    assert stat(root, "/var/lib/floorgate/buffer.db").startswith("floorgate:floorgate ")


def test_upgrade_keeps_config_and_removal_keeps_state(root: DebRoot, debs: Debs) -> None:
    # The plant engineer edits the config; the agent has buffered events.
    config = root.file(CONFIG)
    edited = config.read_text().replace("id: demo-gateway", "id: press-shop-7")
    assert edited != config.read_text()
    config.write_text(edited)
    buffer = "/var/lib/floorgate/buffer.db"
    root.run("sh", "-c", f"echo undelivered-events > {buffer}", user="floorgate")

    # v2 ships a changed example: dpkg keeps the edit (as unattended upgrades do with
    # --force-confold) and leaves the new one beside it.
    root.run("dpkg", "--force-confold", "-i", root.copy_in(debs.v2))
    assert installed_version(root) == f"{debs.version}+test2"
    assert config.read_text() == edited
    assert root.file(f"{CONFIG}.dpkg-dist").read_text().endswith(NEW_RELEASE_LINE)
    assert "agent press-shop-7" in root.run("floorgate", "check-config", CONFIG).stdout
    assert stat(root, "/etc/floorgate") == "root:floorgate 750"

    # v3 ships the same config as v2: the edit is kept without any question asked.
    root.run("dpkg", "-i", root.copy_in(debs.v3))
    assert installed_version(root) == f"{debs.version}+test3"
    assert config.read_text() == edited

    # Remove: the program goes, config and state stay.
    root.run("dpkg", "--remove", "floorgate")
    for gone in ("/opt/floorgate", "/usr/bin/floorgate", "/lib/systemd/system/floorgate.service"):
        assert not root.file(gone).exists() and not root.file(gone).is_symlink(), gone
    assert config.read_text() == edited
    assert root.file(buffer).read_text() == "undelivered-events\n"

    # Purge: the config goes; the buffer still stays (undelivered events), as does the user.
    purge = root.run("dpkg", "--purge", "floorgate")
    assert not config.exists()
    assert not root.file("/etc/floorgate").exists()
    assert root.run("dpkg-statoverride", "--list", "/etc/floorgate", check=False).returncode == 1
    assert root.file(buffer).read_text() == "undelivered-events\n"
    assert "/var/lib/floorgate (event buffer) was kept" in purge.stdout
    assert root.run("getent", "passwd", "floorgate", check=False).returncode == 0


def installed_version(root: DebRoot) -> str:
    return root.run("dpkg-query", "-W", "-f", "${Version}", "floorgate").stdout


@pytest.fixture(scope="module")
def bare_root(
    prerequisites: None, debs: Debs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DebRoot]:
    """Installed without Recommends: no systemd package, so no systemd-sysusers."""
    debroot = DebRoot.create(tmp_path_factory.mktemp("debroot-bare") / "root")
    try:
        debroot.apt_install(debs.v1, recommends=False)
        yield debroot
    finally:
        debroot.remove()


def test_without_systemd_postinst_uses_useradd(bare_root: DebRoot) -> None:
    assert bare_root.run("sh", "-c", "command -v systemd-sysusers", check=False).returncode
    entry = bare_root.run("getent", "passwd", "floorgate").stdout.strip()
    assert re.fullmatch(
        r"floorgate:x:\d+:\d+:floorgate edge gateway agent:/var/lib/floorgate:"
        r"/usr/sbin/nologin",
        entry,
    )
    result = bare_root.run("floorgate", "check-config", CONFIG, user="floorgate")
    assert "configuration is valid" in result.stdout


# No init runs in a chroot. To check what the maintainer scripts ask of a running
# systemd, this root gets the marker directory systemd creates at boot and a systemctl
# that records its calls and answers is-active from a file.
SYSTEMCTL_RECORDER = """#!/bin/sh
echo "$*" >> /tmp/systemctl.calls
if [ "$1" = is-active ]; then
    [ "$(cat /tmp/service.state)" = active ]
fi
"""


def systemctl_calls(root: DebRoot, service_state: str, *dpkg_args: str) -> list[str]:
    root.file("/tmp/service.state").write_text(service_state)
    root.file("/tmp/systemctl.calls").write_text("")
    root.run("dpkg", *dpkg_args)
    return root.file("/tmp/systemctl.calls").read_text().splitlines()


def test_service_handling_under_running_systemd(bare_root: DebRoot, debs: Debs) -> None:
    recorder = bare_root.file("/usr/local/sbin/systemctl")
    recorder.write_text(SYSTEMCTL_RECORDER)
    recorder.chmod(0o755)
    bare_root.file("/run/systemd/system").mkdir(parents=True)

    # Upgrade while running: stopped before the files change, started again after.
    calls = systemctl_calls(bare_root, "active", "-i", bare_root.copy_in(debs.v2))
    assert calls == [
        "is-active --quiet floorgate.service",
        "stop floorgate.service",
        "--system daemon-reload",
        "start floorgate.service",
    ]
    # Upgrade while stopped (or never enabled): it stays stopped.
    calls = systemctl_calls(bare_root, "inactive", "-i", bare_root.copy_in(debs.v3))
    assert calls == ["is-active --quiet floorgate.service", "--system daemon-reload"]
    # Remove while running: stopped, and systemd forgets the unit.
    calls = systemctl_calls(bare_root, "active", "--remove", "floorgate")
    assert calls == [
        "is-active --quiet floorgate.service",
        "stop floorgate.service",
        "--system daemon-reload",
    ]
    # Installed again after the removal: systemd reloads units, nothing is started.
    calls = systemctl_calls(bare_root, "inactive", "-i", bare_root.copy_in(debs.v1))
    assert calls == ["--system daemon-reload"]
