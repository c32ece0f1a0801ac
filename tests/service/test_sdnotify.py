"""sd_notify against a real datagram socket: what systemd would receive."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service.sdnotify import SystemdNotifier
from tests.helpers import NotifySocket


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(tmp_path / "notify")
    yield receiver
    receiver.close()


async def wait_for_messages(receiver: NotifySocket, count: int) -> None:
    async with asyncio.timeout(10):
        while len(receiver.messages) < count:
            await asyncio.sleep(0.01)


async def test_ready_status_reloading_stopping_are_sent_as_systemd_expects(
    notify_socket: NotifySocket,
) -> None:
    notifier = SystemdNotifier(str(notify_socket.path))
    notifier.ready("ok: 1/1 sources up")
    notifier.status("ok: 1/1 sources up")  # unchanged: not sent again
    notifier.status("degraded: 0/1 sources up")
    notifier.reloading()
    notifier.stopping()
    notifier.close()
    await wait_for_messages(notify_socket, 4)
    ready, status, reloading, stopping = notify_socket.texts()
    assert ready.splitlines()[:2] == ["READY=1", "STATUS=ok: 1/1 sources up"]
    assert ready.splitlines()[2].startswith("MAINPID=")
    assert status == "STATUS=degraded: 0/1 sources up"
    assert reloading.splitlines()[0] == "RELOADING=1"
    assert reloading.splitlines()[1].startswith("MONOTONIC_USEC=")
    assert stopping.splitlines()[0] == "STOPPING=1"


async def test_abstract_socket_addresses_are_supported(tmp_path: Path) -> None:
    name = f"floorgate-test-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = SystemdNotifier("@" + name)
        notifier.send("READY=1")
        notifier.close()
        assert sock.recv(100) == b"READY=1"


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.ready("ok")  # a no-op outside systemd


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notifier = SystemdNotifier("")
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notifier.watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert notifier.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert notifier.watchdog_interval() is None


async def test_watchdog_pings_only_while_alive_and_never_while_the_loop_is_blocked(
    notify_socket: NotifySocket,
) -> None:
    notifier = SystemdNotifier(str(notify_socket.path))
    alive = True
    task = asyncio.create_task(notifier.watchdog(lambda: alive, 0.02))
    try:
        await wait_for_messages(notify_socket, 3)

        # A blocked event loop: the pings stop with it (systemd would restart us).
        blocked_from = time.monotonic()
        time.sleep(0.5)  # noqa: ASYNC251 - deliberately blocks the loop under test
        blocked_until = time.monotonic()
        seen = len(notify_socket.messages)
        await wait_for_messages(notify_socket, seen + 2)  # and resume once it runs again
        during = [t for t, _ in notify_socket.messages if blocked_from + 0.05 < t < blocked_until]
        assert during == []

        # A component that died: pings are withheld although the loop runs.
        alive = False
        await asyncio.sleep(0.1)  # let a ping already in flight land
        withheld_from = len(notify_socket.messages)
        await asyncio.sleep(0.3)  # 15 intervals: 15 pings if they were not withheld
        assert len(notify_socket.messages) == withheld_from
        alive = True
        await wait_for_messages(notify_socket, withheld_from + 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        notifier.close()
    assert set(notify_socket.texts()) == {"WATCHDOG=1"}


def test_a_socket_nobody_reads_never_blocks_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its queue fills after a few messages; the rest are dropped, logged once, and every
    send returns (a blocking send would hang this test, and the agent's event loop)."""
    path = tmp_path / "unread"
    unread = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unread.bind(str(path))
    try:
        notifier = SystemdNotifier(str(path))
        for n in range(1000):
            notifier.status(f"ok: {n} events")
        notifier.close()
    finally:
        unread.close()
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1
