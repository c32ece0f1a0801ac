"""The simulated press line served over OPC UA (asyncua), for the demo and the tests.

It shows the same machines as the Modbus simulator (demo/floorgate_demo/simulator.py) by reading the
:class:`SimulatedLine`'s register image: one variable per signal of ``REGISTER_MAP``,
node id ``ns=<index of NAMESPACE_URI>;s=<machine>.<signal>`` (e.g. ``press1.good``, a
UInt32), under Objects/Line/<machine>. Values are written only when they change, with
the simulator's clock as SourceTimestamp. Everything is read-only for clients.

Test hooks: ``stop()`` / ``start()`` (optionally with ``namespace_shift`` filler
namespaces registered first, so the line's namespace index changes as after a PLC
download), ``hang_subscriptions()`` (the server keeps the TCP connection and answers
reads but stops publishing), ``add_variable`` / ``write`` for extra nodes (arrays, bad
status codes, thousands of items for the benchmark), and an optional secured mode
(certificate, policies, user names, trusted client thumbprints).

Run it by hand: ``python -m floorgate_demo.opcua_sim --port 4840`` (it steps the line itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from drivers.codecs import DataType, Swap, decode_registers
from floorgate_demo.simulator import REGISTER_MAP, TICK, Register, SimulatedLine

NAMESPACE_URI = "urn:floorgate:simulator"
DEFAULT_PORT = 4840
PATH = "/floorgate/"

_VARIANT = {
    DataType.BOOL: ua.VariantType.Boolean,
    DataType.UINT16: ua.VariantType.UInt16,
    DataType.UINT32: ua.VariantType.UInt32,
    DataType.FLOAT32: ua.VariantType.Float,
}


def node_ids(namespace_index: int | None = None) -> dict[str, str]:
    """signal name -> node id: the ``nsu=`` form, or ``ns=<index>`` when given."""
    prefix = f"nsu={NAMESPACE_URI}" if namespace_index is None else f"ns={namespace_index}"
    return {
        f"{machine}.{signal}": f"{prefix};s={machine}.{signal}"
        for machine, signals in REGISTER_MAP.items()
        for signal in signals
    }


def _line_value(line: SimulatedLine, register: Register) -> bool | int | float:
    if register.data_type is DataType.BOOL:
        return line.coils[register.address]
    count = {DataType.UINT16: 1, DataType.UINT32: 2, DataType.FLOAT32: 2}[register.data_type]
    words = line.holding[register.address : register.address + count]
    value = decode_registers(words, register.data_type, Swap.NONE)
    assert not isinstance(value, str)
    return value


class _Users:
    """asyncua's UserManager protocol: a User, or None to refuse."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User)
        return None  # refused: the client gets BadUserAccessDenied


@dataclass
class Security:
    """A secured simulator: only these policies, only these users, only these clients."""

    certificate: Path  # server certificate (DER) and key (PEM), e.g. from make_certificate
    private_key: Path
    policies: list[ua.SecurityPolicyType] = field(
        default_factory=lambda: [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    )
    users: dict[str, str] = field(default_factory=dict)  # empty: anonymous allowed
    trusted_clients: set[str] | None = None  # SHA-1 hex thumbprints; None: any client
    application_uri: str = "urn:floorgate:simulator:server"


async def make_certificate(folder: Path, application_uri: str) -> tuple[Path, Path]:
    """A self-signed server certificate (DER) and key (PEM) in ``folder``."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    cert, key = folder / "server_cert.der", folder / "server_key.pem"
    await setup_self_signed_certificate(
        key, cert, application_uri, socket.gethostname(), [ExtendedKeyUsageOID.SERVER_AUTH], {}
    )
    return cert, key


def thumbprint_of(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest().upper()


@dataclass
class _Extra:
    value: Any
    variant: ua.VariantType
    status: int = ua.StatusCodes.Good
    source_time: datetime | None = None


class OpcUaSimulator:
    """An asyncua server showing ``line``; ``tick=None`` only mirrors a line stepped
    elsewhere (the Modbus simulator in the demo)."""

    def __init__(
        self,
        line: SimulatedLine,
        *,
        tick: float | None = TICK,
        refresh: float = 0.05,
        security: Security | None = None,
    ) -> None:
        _quiet_server_log()
        self.line = line
        self.port = 0
        self.host = "127.0.0.1"
        self.security = security
        self.namespace_index = 0
        self._tick = tick
        self._refresh = refresh
        self._server: Server | None = None
        self._nodes: dict[str, Node] = {}
        self._last: dict[str, Any] = {}
        self._extras: dict[str, _Extra] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}{PATH}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(
        self, host: str = "127.0.0.1", port: int | None = None, *, namespace_shift: int = 0
    ) -> None:
        """Serve on ``host:port`` (None: the previous port, else any free one)."""
        self.host = host
        if port is not None:
            self.port = port
        if self.port == 0:
            self.port = _free_port(host)
        users = self.security.users if self.security else {}
        server = Server(user_manager=_Users(users) if users else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("floorgate simulated line")
        await self._secure(server)
        for index in range(namespace_shift):
            await server.register_namespace(f"urn:floorgate:filler:{index}")
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        await self._build(server)
        await server.start()
        self._server = server
        self._last.clear()
        await self._publish_line()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="opcua simulator")

    async def _secure(self, server: Server) -> None:
        security = self.security
        if security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return
        await server.set_application_uri(security.application_uri)
        await server.load_certificate(security.certificate)
        await server.load_private_key(security.private_key)
        server.set_security_policy(security.policies)
        if security.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])

        async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
            trusted = security.trusted_clients  # read at each session: tests change it
            if trusted is not None and thumbprint_of(cert) not in trusted:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

        server.set_certificate_validator(validate)

    async def _build(self, server: Server) -> None:
        ns = self.namespace_index
        line_folder = await server.nodes.objects.add_folder(
            ua.NodeId("Line", ns), ua.QualifiedName("Line", ns)
        )
        self._nodes = {}
        for machine, signals in REGISTER_MAP.items():
            folder = await line_folder.add_object(
                ua.NodeId(machine, ns), ua.QualifiedName(machine, ns)
            )
            for signal, register in signals.items():
                name = f"{machine}.{signal}"
                variant = _VARIANT[register.data_type]
                initial = ua.Variant(_line_value(self.line, register), variant)
                self._nodes[name] = await folder.add_variable(
                    ua.NodeId(name, ns), ua.QualifiedName(signal, ns), initial, varianttype=variant
                )
        extras = await server.nodes.objects.add_folder(
            ua.NodeId("Extra", ns), ua.QualifiedName("Extra", ns)
        )
        for name, extra in self._extras.items():
            self._nodes[name] = await extras.add_variable(
                ua.NodeId(name, ns),
                ua.QualifiedName(name, ns),
                ua.Variant(extra.value, extra.variant),
            )
            await self._write_extra(name)

    async def add_variable(self, name: str, value: Any, variant: ua.VariantType) -> None:
        """An extra variable ``ns=<line namespace>;s=<name>`` (kept across restarts)."""
        self._extras[name] = _Extra(value, variant)
        if self._server is not None:
            folder = self._server.get_node(ua.NodeId("Extra", self.namespace_index))
            self._nodes[name] = await folder.add_variable(
                ua.NodeId(name, self.namespace_index),
                ua.QualifiedName(name, self.namespace_index),
                ua.Variant(value, variant),
            )

    async def add_variables(
        self, names: Iterable[str], value: Any, variant: ua.VariantType
    ) -> None:
        for name in names:
            await self.add_variable(name, value, variant)

    async def write(
        self,
        name: str,
        value: Any,
        *,
        status: int = ua.StatusCodes.Good,
        source_time: datetime | None = None,
    ) -> None:
        """Set an extra variable's value, status code and SourceTimestamp (default: now)."""
        extra = self._extras[name]
        extra.value, extra.status, extra.source_time = value, status, source_time
        await self._write_extra(name)

    async def _write_extra(self, name: str) -> None:
        extra = self._extras[name]
        if self._server is None:
            return
        now = datetime.now(UTC)
        await self._server.write_attribute_value(
            self._nodes[name].nodeid,
            ua.DataValue(
                ua.Variant(extra.value, extra.variant),
                StatusCode=ua.StatusCode(extra.status),
                SourceTimestamp=extra.source_time or now,
                ServerTimestamp=now,
            ),
        )

    async def _publish_line(self) -> None:
        """Write the line's signals that changed since the last refresh."""
        server = self._server
        if server is None:
            return
        now = datetime.now(UTC)
        for machine, signals in REGISTER_MAP.items():
            for signal, register in signals.items():
                name = f"{machine}.{signal}"
                value = _line_value(self.line, register)
                if self._last.get(name) == value:
                    continue
                self._last[name] = value
                await server.write_attribute_value(
                    self._nodes[name].nodeid,
                    ua.DataValue(
                        ua.Variant(value, _VARIANT[register.data_type]),
                        SourceTimestamp=now,
                        ServerTimestamp=now,
                    ),
                )

    async def _run(self) -> None:
        """Step the line every ``tick`` (unless frozen or ``tick`` is None) and mirror it."""
        loop = asyncio.get_running_loop()
        next_step = loop.time()
        while True:
            await asyncio.sleep(self._refresh)
            if self._tick is not None and loop.time() >= next_step:
                next_step += self._tick
                if not self.line.frozen:
                    self.line.step()
            await self._publish_line()

    def hang_subscriptions(self) -> int:
        """Stop every subscription's publish loop while the connection stays up and reads
        are still answered: what a wedged server looks like. Returns how many."""
        assert self._server is not None
        service = self._server.iserver.subscription_service
        hung = 0
        for subscription in service.subscriptions.values():
            task = subscription._task  # asyncua has no public "stop publishing" switch
            if task is not None:
                task.cancel()
                hung += 1
        return hung

    async def stop(self) -> None:
        """Stop serving (clients see the connection drop); the line keeps its state."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def close(self) -> None:
        await self.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _quiet_server_log() -> None:
    # asyncua warns at every start about endpoints a simulator does not need.
    server_log = logging.getLogger("asyncua.server")
    if server_log.level == logging.NOTSET:
        server_log.setLevel(logging.CRITICAL)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def serve_opcua(line: SimulatedLine, host: str, port: int, tick: float | None) -> None:
    async with OpcUaSimulator(line, tick=tick) as simulator:
        await simulator.start(host, port)
        print(f"simulated line on {simulator.endpoint} (namespace {NAMESPACE_URI})", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """``python -m floorgate_demo.opcua_sim [--host H] [--port P] [--seed N]``."""
    parser = argparse.ArgumentParser(description="Simulated press line (OPC UA).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_opcua(SimulatedLine(args.seed), args.host, args.port, TICK))


if __name__ == "__main__":
    main()
