"""`floorgate opcua ...`: look at an OPC UA server before writing its YAML.

- ``floorgate opcua browse ENDPOINT [--node ID] [--depth N]`` prints the address space:
  node id in ``nsu=`` form (paste it into ``node_id``), browse name, data type and the
  current value.
- ``floorgate opcua endpoints ENDPOINT`` lists the security policies and modes the server
  offers, with its certificate thumbprint (for ``security.server_thumbprint``).

Both are read-only. Security options match the source keys; a secured browse uses (or
generates) the client certificate of ``--state-dir``/opcua/browse/. Exit status: 0 done,
1 the server could not be read (message on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the `opcua` command group to the floorgate parser (`sub` is its subparsers)."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "opcua", help="browse an OPC UA server to find the node ids for the YAML"
    )
    commands = parser.add_subparsers(dest="opcua_command", required=True, metavar="COMMAND")

    browse = commands.add_parser("browse", help="print the address space (read-only)")
    browse.add_argument("endpoint", help="opc.tcp://host:port/path")
    browse.add_argument("--node", help="start here (node id, nsu= form allowed); default Objects")
    browse.add_argument("--depth", type=int, default=3, help="levels below the start (default 3)")
    browse.add_argument(
        "--standard", action="store_true", help="include namespace 0 (Server object, ...)"
    )
    browse.add_argument("--json", action="store_true", help="machine-readable output")
    _security_options(browse)
    browse.set_defaults(func=_browse)

    endpoints = commands.add_parser("endpoints", help="security offered, server thumbprint")
    endpoints.add_argument("endpoint", help="opc.tcp://host:port/path")
    endpoints.add_argument("--json", action="store_true", help="machine-readable output")
    endpoints.set_defaults(func=_endpoints)


def _security_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (as the source's security keys)")
    group.add_argument("--policy", default="none", help="none | Basic256Sha256 | ...")
    group.add_argument("--mode", default="none", help="none | sign | sign_and_encrypt")
    group.add_argument("--certificate", type=Path, help="client certificate file")
    group.add_argument("--private-key", type=Path, help="client private key file")
    group.add_argument("--server-certificate", type=Path, help="server certificate to trust")
    group.add_argument("--server-thumbprint", help="or its SHA-1 thumbprint")
    group.add_argument("--username", help="user name (anonymous when unset)")
    group.add_argument("--password-file", type=Path, help="file holding the password")
    group.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".floorgate-opcua"),
        help="where a generated client certificate is kept (default ./.floorgate-opcua)",
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    security: dict[str, Any] = {"policy": args.policy, "mode": args.mode}
    for key in ("certificate", "private_key", "server_certificate", "server_thumbprint"):
        if getattr(args, key) is not None:
            security[key] = str(getattr(args, key))
    settings: dict[str, Any] = {"security": security}
    if args.username:
        settings["username"] = args.username
        if args.password_file is None:
            raise ValueError("--username needs --password-file")
        settings["password"] = {"file": str(args.password_file)}
    return settings


def _quiet_library() -> None:
    # asyncua logs warnings (revised session timeout, ...) that mean nothing to a reader.
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def _browse(args: argparse.Namespace) -> int:
    _quiet_library()
    from pydantic import ValidationError

    from drivers.base import DriverError
    from drivers.opcua.browse import browse, connection_config

    try:
        config = connection_config(args.endpoint, **_settings(args))
    except (ValidationError, ValueError) as exc:
        print(f"floorgate opcua browse: {_first_error(exc)}", file=sys.stderr)
        return 2
    try:
        nodes = asyncio.run(
            browse(config, args.state_dir, args.node, args.depth, standard=args.standard)
        )
    except DriverError as exc:
        print(f"floorgate opcua browse: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(node) for node in nodes], indent=2))
        return 0
    for node in nodes:
        line = f"{'  ' * node.depth}{node.browse_name}  [{node.node_class}]  {node.node_id}"
        if node.data_type is not None:
            line += f"  {node.data_type} = {node.value}"
        print(line)
    return 0


def _endpoints(args: argparse.Namespace) -> int:
    _quiet_library()
    from drivers.base import DriverError
    from drivers.opcua.browse import endpoints

    try:
        found = asyncio.run(endpoints(args.endpoint))
    except DriverError as exc:
        print(f"floorgate opcua endpoints: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(item) for item in found], indent=2))
        return 0
    for item in found:
        print(
            f"{item.policy:<22} {item.mode:<15} users: {', '.join(item.user_tokens) or '-'}"
            f"  server thumbprint: {item.server_thumbprint or '-'}"
        )
    return 0


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)
