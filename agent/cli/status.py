"""`floorgate status`: the health of a running agent as a readable table.

Exit codes follow the monitoring-plugin convention so a cron job or a Nagios/Icinga check
can use the command as is: 0 ok, 1 degraded, 2 failing, 3 the agent cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from agent.common.secrets import Secret, SecretError, read_secret

EXIT_FOR_STATUS = {"ok": 0, "degraded": 1, "failing": 2}
EXIT_UNREACHABLE = 3


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _since(timestamp: float | None) -> str:
    return (
        "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    )


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render(report: dict[str, Any]) -> str:
    buffer = report["buffer"]
    lines = [
        f"floorgate {report['version']}  agent {report['agent']}  site {report['site']}  "
        f"status {report['status'].upper()}  up {_age(report['uptime_s'])}",
    ]
    lines += [f"  ! {reason}" for reason in report["reasons"]]
    lines += ["", "sources:"]
    rows = [["name", "state", "since", "last data", "reconnects", "last error"]]
    for name, source in report["sources"].items():
        rows.append(
            [
                name,
                source["state"],
                _since(source["since"]),
                _age(source["last_data_age_s"]) + " ago"
                if source["last_data_age_s"] is not None
                else "-",
                str(source["reconnects"]),
                source["last_error"] or "-",
            ]
        )
    lines += _table(rows)
    lines += ["", "destinations:"]
    rows = [["name", "type", "state", "pending", "oldest", "dead", "delivered", "last error"]]
    for name, dest in report["destinations"].items():
        rows.append(
            [
                name,
                dest["type"],
                dest["state"],
                str(dest["pending"]),
                _age(dest["oldest_pending_age_s"]),
                str(dest["dead_letters"]),
                str(dest["delivered"]),
                dest["last_error"] or "-",
            ]
        )
    lines += _table(rows) if len(rows) > 1 else ["  (none)"]
    disk = report.get("disk", {})
    free = disk.get("free_bytes")
    lines += [
        "",
        f"buffer: {buffer['pending']} pending, {buffer['dead_letters']} dead letters, "
        f"oldest {_age(buffer['oldest_pending_age_s'])}, {buffer['size_bytes'] // 1024} KiB "
        f"({buffer['path']}); disk free " + ("-" if free is None else f"{free // 1024**2} MiB"),
    ]
    return "\n".join(lines)


def _credential_hint(token: Secret) -> str:
    """A systemd credential is the service's alone: say how to give the token here."""
    if token.credential is None:
        return ""
    return (
        f"\n  the credential {token.credential!r} is readable by the service only; give its "
        "file with --token-file (the path after the colon in the unit's "
        f"LoadCredential={token.credential}:..., readable by root)"
    )


def cmd_status(args: argparse.Namespace) -> int:
    from agent.cli.loading import load_or_exit

    url = args.url
    token: Secret | None = None if args.token_file is None else Secret(file=args.token_file)
    if url is None:
        config = load_or_exit(args.config)
        if not config.health.enabled:
            print(f"{args.config}: health.enabled is false; nothing to ask", file=sys.stderr)
            return EXIT_UNREACHABLE
        host = "127.0.0.1" if config.health.host in ("0.0.0.0", "::") else config.health.host
        url = f"http://{host}:{config.health.port}"
        token = token or config.health.token
    headers = {}
    if token is not None:
        try:
            headers["Authorization"] = f"Bearer {read_secret(token)}"
        except SecretError as exc:
            print(f"cannot read health.token: {exc}{_credential_hint(token)}", file=sys.stderr)
            return EXIT_UNREACHABLE
    try:
        response = httpx.get(f"{url.rstrip('/')}/readyz", headers=headers, timeout=5)
        report = response.json()
        if response.status_code == 401:
            print(f"{url}: {report.get('error', 'unauthorized')}", file=sys.stderr)
            return EXIT_UNREACHABLE
    except (httpx.HTTPError, ValueError) as exc:
        print(f"floorgate is not answering at {url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(report, indent=2) if args.json else render(report))
    return EXIT_FOR_STATUS.get(report.get("status", ""), EXIT_UNREACHABLE)


def register(sub: Any, default_config: Path) -> None:
    status = sub.add_parser(
        "status",
        help="show the health of the running agent (exit 0 ok, 1 degraded, 2 failing, "
        "3 unreachable)",
    )
    status.add_argument("--config", type=Path, default=default_config)
    status.add_argument("--url", default=None, help="health server URL (instead of --config)")
    status.add_argument("--json", action="store_true", help="print the /readyz JSON")
    status.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the health token (instead of health.token from the config: "
        "a systemd credential is readable by the service only)",
    )
    status.set_defaults(func=cmd_status)
