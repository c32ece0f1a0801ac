"""`floorgate odoo check --config PATH`: what a plant engineer runs before starting the
service. For each Odoo destination it authenticates, shows the server version and the
protocol chosen, resolves every work center, loss, equipment and product the config
needs, and prints a table (found / missing / ambiguous) with the work order in progress
on each work center, then every access right the config needs (model and operation, as
Odoo's ``has_access`` answers for the integration user) and when the API key expires.

Exit codes: 0 everything found; 1 something missing or ambiguous; 2 Odoo could not be
reached or refused the key; 78 the config itself is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.config.models import FloorgateConfig
from agent.forwarders.odoo.config import (
    DEFAULT_REASON_WORDS,
    KEY_EXPIRY_WARNING_DAYS,
    OdooDestinationConfig,
)

EXIT_MISSING = 1
EXIT_UNREACHABLE = 2


def register(sub: Any) -> None:
    """Add the `odoo` command group to the floorgate parser (`sub` is its subparsers)."""
    parser: argparse.ArgumentParser = sub.add_parser("odoo", help="odoo commands")
    commands = parser.add_subparsers(dest="odoo_command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="authenticate and resolve every work center, loss, equipment and product "
        "the config needs (exit 1 if anything is missing)",
    )
    check.add_argument("--config", type=Path, required=True)
    check.add_argument("--destination", help="only this Odoo destination (default: all)")
    check.set_defaults(func=cmd_check)


@dataclass
class Line:
    kind: str
    ref: str
    used_by: str
    status: str
    detail: str = ""


def cmd_check(args: argparse.Namespace) -> int:
    from agent.cli.loading import load_or_exit

    config = load_or_exit(args.config)
    destinations = [
        d
        for d in config.destinations
        if isinstance(d, OdooDestinationConfig)
        and (args.destination is None or d.name == args.destination)
    ]
    if not destinations:
        print(
            f"{args.config}: no Odoo destination"
            + (f" named {args.destination}" if args.destination else "")
        )
        return EXIT_MISSING
    worst = 0
    for destination in destinations:
        worst = max(worst, asyncio.run(_check(config, destination)))
    return worst


def machines_for(config: FloorgateConfig, destination: OdooDestinationConfig) -> list[str]:
    names = [m.name for m in config.machines]
    if destination.machines is not None:
        names = [n for n in names if n in destination.machines]
    return names


def needed_losses(config: FloorgateConfig, destination: OdooDestinationConfig) -> list[str]:
    names = set(destination.losses.reasons.values()) | set(destination.losses.states.values())
    reasons = {r for m in config.machines if m.state for r in m.state.reasons.values()}
    for reason in reasons:
        for word, loss in DEFAULT_REASON_WORDS.items():
            if word in reason.lower() and reason not in destination.losses.reasons:
                names.add(loss)
    if destination.log_running:
        names.add(destination.losses.productive)
    return sorted(names)


async def _check(config: FloorgateConfig, destination: OdooDestinationConfig) -> int:
    from agent.common.secrets import SecretError, read_secret
    from agent.forwarders.base import ForwardError
    from agent.forwarders.odoo.transport import OdooTransport

    print(f"destination {destination.name}: {destination.target()}")
    try:
        key = read_secret(destination.api_key)
    except SecretError as exc:
        print(f"  api_key: {exc}")
        return EXIT_UNREACHABLE
    transport = OdooTransport(
        url=destination.url,
        database=destination.database,
        api_key=key,
        protocol=destination.protocol,
        login=destination.login,
        timeout=destination.timeout,
        ca_file=destination.ca_file,
        where=f"destination {destination.name}",
    )
    try:
        await transport.open()
        tz = transport.user_context.get("tz") or "not set (UTC)"
        version, protocol = transport.server_version, transport.protocol.value
        print(f"  server {version}, protocol {protocol}, user tz {tz}")
        expiry = await transport.key_expiry()
        print(f"  api key expires: {_expiry(expiry)}")
        lines = await _resolve(config, destination, transport)
        lines += await _rights(destination, transport)
    except ForwardError as exc:
        print(f"  cannot check: {exc}")
        return EXIT_UNREACHABLE
    finally:
        await transport.close()
    _print_table(lines)
    bad = [line for line in lines if line.status in ("missing", "ambiguous")]
    if bad:
        print(f"  {len(bad)} problem(s): events needing them will wait in the buffer")
        return EXIT_MISSING
    print("  everything the config needs was found")
    return 0


async def _resolve(
    config: FloorgateConfig, destination: OdooDestinationConfig, transport: Any
) -> list[Line]:
    from agent.forwarders.odoo.master import Kind, MasterData

    master = MasterData(transport, destination.master_refresh)
    lines: list[Line] = []
    centers: dict[int, str] = {}
    for machine in machines_for(config, destination):
        mapping = destination.mapping(machine)
        wanted = [(Kind.WORK_CENTER, destination.work_center(machine))]
        if mapping.equipment:
            wanted.append((Kind.EQUIPMENT, mapping.equipment))
        if mapping.scrap_product:
            wanted.append((Kind.PRODUCT, mapping.scrap_product))
        for lookup in await master.resolve_all(wanted):
            lines.append(Line(lookup.kind.value, lookup.ref, machine, lookup.status, _ids(lookup)))
            if lookup.kind is Kind.WORK_CENTER and lookup.id is not None:
                centers[lookup.id] = machine
    for loss in needed_losses(config, destination):
        lookup = await master.resolve(Kind.LOSS, loss)
        lines.append(Line("loss", loss, "losses", lookup.status, _ids(lookup)))
    if centers:
        rows = await transport.call(
            "mrp.workorder",
            "search_read",
            domain=[["workcenter_id", "in", sorted(centers)], ["state", "=", "progress"]],
            fields=["name", "production_id", "workcenter_id"],
        )
        running: dict[int, list[str]] = {}
        for row in rows or []:
            running.setdefault(int(row["workcenter_id"][0]), []).append(
                f"{row['production_id'][1]} / {row['name']}"
            )
        for center, machine in centers.items():
            orders = running.get(center)
            lines.append(
                Line(
                    "work order",
                    "in progress",
                    machine,
                    "found" if orders else "none",
                    ", ".join(
                        orders
                        or [f"counts will wait (no_work_order: {destination.no_work_order.value})"]
                    ),
                )
            )
    return lines


def _expiry(expiry: datetime | None) -> str:
    if expiry is None:
        return "never"
    days = (expiry - datetime.now(UTC)).total_seconds() / 86400
    text = f"{expiry.strftime('%Y-%m-%d %H:%M UTC')} ({days:.0f} days left)"
    if days < KEY_EXPIRY_WARNING_DAYS:
        text += " — make a new key before then, or the destination stops"
    return text


async def _rights(destination: OdooDestinationConfig, transport: Any) -> list[Line]:
    from agent.forwarders.odoo.rights import missing_rights, needed_rights

    checked = await missing_rights(transport, needed_rights(destination))
    return [
        Line(
            "right",
            f"{right.model} {right.operation}",
            right.why,
            "ok" if problem is None else "missing",
            problem or "",
        )
        for right, problem in checked
    ]


def _ids(lookup: Any) -> str:
    if lookup.status != "found":
        return str(lookup.problem())
    return f"id {lookup.ids[0]}"


def _print_table(lines: list[Line]) -> None:
    header = Line("what", "reference", "for", "status", "odoo")
    rows = [header, *lines]
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("kind", "ref", "used_by", "status")]
    for row in rows:
        cells = [row.kind, row.ref, row.used_by, row.status]
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        print(f"  {text}  {row.detail}".rstrip())
