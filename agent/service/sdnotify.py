"""systemd's notify protocol: one datagram per message on $NOTIFY_SOCKET.

Written here rather than taken from a library because the protocol is a single
``sendto`` of ``KEY=VALUE`` lines, and the maintained wrappers (sdnotify, systemd-python)
add either nothing or a C build dependency.

- ``READY=1`` once the buffer is open and the components are started; PLCs may still be
  offline (an offline machine is normal and shown in health, not a reason to fail start).
- ``STATUS=...`` when the one-line summary changes (what `systemctl status` shows).
- ``RELOADING=1`` / ``READY=1`` around a config reload, ``STOPPING=1`` on shutdown.
- ``WATCHDOG=1`` from a task on the event loop, and only while the agent says its
  components are alive: a blocked loop or a dead supervisor stops the pings and systemd
  restarts the service after ``WatchdogSec=``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger("floorgate.systemd")


class SystemdNotifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # "@name" is a Linux abstract socket address: a leading NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._status: str | None = None
        self._failed = False
        if self._address:
            # Non-blocking: the agent sends from its event loop, and a socket nobody reads
            # (a supervisor other than systemd) would otherwise block the loop for good
            # once its queue is full. A message that does not fit is dropped (logged once).
            kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            self._socket = socket.socket(socket.AF_UNIX, kind)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> None:
        """Send one message; a failure is logged once and never stops the agent."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd socket=%s error=%s", self._address, exc)
            self._failed = True

    def ready(self, status: str) -> None:
        self._status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (Type=notify-reload, v253+) match the reply.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: committing buffered events")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WatchdogSec=), or None when no watchdog is set
        for this process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return max(int(usec) / 1e6 / 2, 0.01)
        except ValueError:
            return None

    async def watchdog(self, alive: Callable[[], bool], interval: float) -> None:
        """Ping every ``interval`` seconds while ``alive()``; runs until cancelled."""
        withheld = False
        while True:
            if alive():
                if withheld:
                    log.info("components alive again; watchdog pings resumed")
                withheld = False
                self.send("WATCHDOG=1")
            elif not withheld:
                withheld = True
                log.error("a component stopped running; withholding watchdog pings")
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
