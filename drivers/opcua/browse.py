"""Browse an OPC UA server's address space for `floorgate opcua browse`, and list its
endpoints (security policies and certificate thumbprints) for `floorgate opcua endpoints`.

Read-only: Browse and Read services only. Node ids are printed in ``nsu=`` form, ready to
paste into the YAML.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua

from drivers.base import DriverError
from drivers.opcua.config import OpcUaConfig
from drivers.opcua.errors import translate
from drivers.opcua.security import apply_security, first_certificate, thumbprint
from drivers.opcua.values import UnsupportedValue, nsu_form, plain_value, resolve_node_id

MAX_NODES = 5000  # a browse prints at most this many nodes


@dataclass(frozen=True)
class BrowsedNode:
    depth: int
    node_id: str  # nsu= form
    browse_name: str
    node_class: str
    data_type: str | None = None  # variables only
    value: str | None = None  # variables only: the current value, or why there is none


@dataclass(frozen=True)
class EndpointInfo:
    url: str
    policy: str
    mode: str
    server_thumbprint: str | None
    user_tokens: list[str]


def connection_config(endpoint: str, **settings: Any) -> OpcUaConfig:
    """A source config carrying only how to connect (security, user), for the CLI."""
    return OpcUaConfig.model_validate(
        {
            "type": "opcua",
            "name": "browse",
            "endpoint": endpoint,
            "signals": [{"name": "server_state", "node_id": "i=2259"}],
            **settings,
        }
    )


@contextlib.asynccontextmanager
async def connected(config: OpcUaConfig, state_dir: Path) -> AsyncIterator[Client]:
    client = Client(config.endpoint, timeout=config.timeout)
    thumb: str | None = None
    try:
        thumb = await apply_security(config, client, state_dir)
        await client.connect()
    except Exception as exc:
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        raise translate(
            exc, endpoint=config.endpoint, username=config.username, client_thumbprint=thumb
        ) from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def browse(
    config: OpcUaConfig,
    state_dir: Path,
    start: str | None,
    depth: int,
    *,
    standard: bool = False,
) -> list[BrowsedNode]:
    """The tree under ``start`` (default Objects), ``depth`` levels deep. From the default
    start, the standard nodes of namespace 0 (the Server object, ...) are left out unless
    ``standard``: they are the same on every server and drown the machine data."""
    async with connected(config, state_dir) as client:
        try:
            return await _Browser(client, skip_standard=start is None and not standard).run(
                start, depth
            )
        except DriverError:
            raise
        except Exception as exc:
            raise translate(
                exc, endpoint=config.endpoint, username=config.username, client_thumbprint=None
            ) from None


class _Browser:
    def __init__(self, client: Client, *, skip_standard: bool) -> None:
        self.client = client
        self.skip_standard = skip_standard
        self.namespaces: list[str] = []
        self.type_names: dict[str, str] = {}
        self.found: list[BrowsedNode] = []

    async def run(self, start: str | None, depth: int) -> list[BrowsedNode]:
        self.namespaces = await self.client.get_namespace_array()
        if start is None:
            node = self.client.nodes.objects
        else:
            node = self.client.get_node(resolve_node_id(start, self.namespaces))
        name = await node.read_browse_name()
        node_class = await node.read_node_class()
        await self._add(node, 0, name.to_string(), node_class)
        await self._children(node, 1, depth)
        return self.found

    async def _children(self, node: Any, level: int, depth: int) -> None:
        if level > depth or len(self.found) >= MAX_NODES:
            return
        for ref in await node.get_children_descriptions():
            if len(self.found) >= MAX_NODES:
                return
            if level == 1 and self.skip_standard and ref.NodeId.NamespaceIndex == 0:
                continue
            child = self.client.get_node(ref.NodeId)
            await self._add(child, level, ref.BrowseName.to_string(), ref.NodeClass)
            await self._children(child, level + 1, depth)

    async def _add(self, node: Any, level: int, name: str, node_class: Any) -> None:
        class_name = ua.NodeClass(node_class).name
        data_type = value = None
        if node_class == ua.NodeClass.Variable:
            data_type, value = await self._variable(node)
        node_id = nsu_form(node.nodeid, self.namespaces)
        self.found.append(BrowsedNode(level, node_id, name, class_name, data_type, value))

    async def _variable(self, node: Any) -> tuple[str, str]:
        answers = await node.read_attributes([ua.AttributeIds.DataType, ua.AttributeIds.Value])
        type_id = answers[0].Value.Value if answers[0].Value is not None else None
        data_type = await self._type_name(type_id) if type_id is not None else "?"
        answer = answers[1]
        if answer.StatusCode is not None and not answer.StatusCode.is_good():
            return data_type, f"<{answer.StatusCode.name}>"
        raw = answer.Value.Value if answer.Value is not None else None
        try:
            shown = plain_value(raw)
        except UnsupportedValue as exc:
            return data_type, f"<{exc}>"
        return data_type, repr(shown)

    async def _type_name(self, type_id: Any) -> str:
        key = str(type_id.to_string())
        if key not in self.type_names:
            try:
                name = await self.client.get_node(type_id).read_browse_name()
                self.type_names[key] = str(name.Name)
            except Exception:  # an unreadable type is shown by its id
                self.type_names[key] = key
        return self.type_names[key]


async def endpoints(endpoint: str, request_timeout: float = 5.0) -> list[EndpointInfo]:
    """What the server offers (GetEndpoints needs no session and no security)."""
    client = Client(endpoint, timeout=request_timeout)
    try:
        found = await client.connect_and_get_server_endpoints()
    except Exception as exc:
        raise translate(exc, endpoint=endpoint, username=None, client_thumbprint=None) from None
    result = []
    for item in found:
        cert = item.ServerCertificate
        result.append(
            EndpointInfo(
                url=str(item.EndpointUrl),
                policy=str(item.SecurityPolicyUri).rsplit("#", 1)[-1],
                mode=ua.MessageSecurityMode(item.SecurityMode).name,
                server_thumbprint=thumbprint(first_certificate(cert)) if cert else None,
                user_tokens=[ua.UserTokenType(t.TokenType).name for t in item.UserIdentityTokens],
            )
        )
    return result
