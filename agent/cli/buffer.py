"""`floorgate buffer ...`: the operator's view of the store-and-forward buffer.

Works while the agent runs, from another process (see ``buffer.operator``): it never
creates, migrates or moves the file. The file comes from ``--db PATH`` or from the
config (``--config PATH``, default /etc/floorgate/config.yaml). Tables for people,
``--json`` for scripts. Exit status: 0 done, 1 the buffer could not do it (message on
stderr), 2 bad arguments, 78 bad config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli.loading import DEFAULT_CONFIG


def register(sub: Any) -> None:
    """Add the `buffer` command group to the floorgate parser (`sub` is its subparsers)."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}"
    )
    where.add_argument("--db", type=Path, help="the buffer file itself (instead of --config)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    parser: argparse.ArgumentParser = sub.add_parser(
        "buffer", help="inspect and repair the store-and-forward buffer (safe while running)"
    )
    commands = parser.add_subparsers(dest="buffer_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, parents=[common], description=help_text
        )
        cmd.set_defaults(func=lambda args: _run(func, args))
        return cmd

    command("stats", "per destination: pending, dead, delivered, oldest age; size, drops", _stats)
    dead = command("dead-letters", "list dead-lettered events with the reason", _dead_letters)
    dead.add_argument("--destination", help="only this destination")
    dead.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    show = command("show", "one event: envelope, payload and each delivery", _show)
    show.add_argument("id", help="event id (or seq number)")
    requeue = command("requeue", "send dead letters again (same ids)", _requeue)
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="event id (or seq number)")
    which.add_argument("--all", action="store_true", help="every dead letter")
    requeue.add_argument("--destination", help="only this destination")
    purge = command("purge", "give up on dead letters (they are deleted)", _purge)
    purge.add_argument("--dead", action="store_true", required=True, help="purge dead letters")
    purge.add_argument("--older-than", help="only those dead longer than this, e.g. 7d")
    purge.add_argument("--destination", help="only this destination")
    replay = command("replay", "send delivered events again (same ids)", _replay)
    replay.add_argument("--destination", required=True)
    replay.add_argument(
        "--since", required=True, help="event time: ISO 8601 (UTC if no zone) or 2h"
    )
    replay.add_argument("--until", help="event time, exclusive (default: now)")


def _run(func: Callable[..., int], args: argparse.Namespace) -> int:
    from buffer import BufferStoreError
    from buffer.operator import OperatorBuffer

    path, max_size = _where(args)
    _warn_if_not_owner(path)
    try:
        with OperatorBuffer(path) as buf:
            return func(buf, args, max_size)
    except (BufferStoreError, ValueError) as exc:
        print(f"floorgate buffer: {exc}", file=sys.stderr)
        return 1


def _warn_if_not_owner(path: Path) -> None:
    """SQLite may create the -wal / -shm files next to the buffer: made by another user
    (root), they could lock the agent out of its own buffer."""
    try:
        owner = path.stat().st_uid
    except OSError:
        return  # missing: OperatorBuffer says so
    if owner != os.geteuid():
        print(
            f"floorgate buffer: warning: {path} belongs to uid {owner}, not to you;"
            " run this as the agent's user (sudo -u floorgate floorgate buffer ...)",
            file=sys.stderr,
        )


def _where(args: argparse.Namespace) -> tuple[Path, int | None]:
    if args.db is not None:
        return args.db, None
    from agent.cli.loading import load_or_exit

    config = load_or_exit(args.config)
    return config.buffer_path, config.buffer.max_size


# -- the commands -------------------------------------------------------------------------


def _stats(buf: Any, args: argparse.Namespace, max_size: int | None) -> int:
    stats = buf.stats()
    now = time.time()
    if args.json:
        return _print_json(
            {
                "path": str(buf.path),
                "events": stats.events,
                "size_bytes": stats.size_bytes,
                "file_bytes": stats.size_bytes - stats.wal_bytes,
                "wal_bytes": stats.wal_bytes,
                "free_bytes": stats.free_bytes,
                "max_size": max_size,
                "destinations": {
                    name: {
                        **asdict(d),
                        "retrying": buf.retrying(name),
                        "oldest_pending_age_s": _age(d.oldest_pending_created, now),
                    }
                    for name, d in sorted(stats.destinations.items())
                },
                "dropped": [
                    {"reason": reason, "type": t, "events": n}
                    for (reason, t), n in sorted(stats.dropped.items())
                ],
                "last_dropped_at": stats.last_dropped_at,
                "evicted_delivered": stats.evicted_delivered,
                "written": _written(stats),
            }
        )
    limit = f" of {_size(max_size)} ({stats.size_bytes / max_size:.0%})" if max_size else ""
    print(f"buffer {buf.path}: {stats.events:,} events, {_size(stats.size_bytes)} on disk{limit}")
    print(
        f"file {_size(stats.size_bytes - stats.wal_bytes)} ({_size(stats.free_bytes)} of it free,"
        f" filled before the file grows), WAL {_size(stats.wal_bytes)}"
    )
    print(_written_line(stats))
    rows = [
        [
            name,
            f"{d.pending:,}",
            f"{buf.retrying(name):,}",
            f"{d.dead:,}",
            f"{d.delivered:,}",
            _duration(_age(d.oldest_pending_created, now)),
            _when(d.last_delivered_at),
        ]
        for name, d in sorted(stats.destinations.items())
    ]
    headers = ["DESTINATION", "PENDING", "RETRYING", "DEAD", "DELIVERED", "OLDEST PENDING"]
    headers.append("LAST DELIVERY")
    print(_table(headers, rows) if rows else "no destination has events yet")
    if stats.dropped:
        dropped = ", ".join(
            f"{t} {reason}: {n:,}" for (reason, t), n in sorted(stats.dropped.items())
        )
        print(f"undelivered events dropped: {dropped} (last {_when(stats.last_dropped_at)})")
    if stats.evicted_delivered:
        print(f"delivered events removed early for room: {stats.evicted_delivered:,}")
    return 0


def _written(stats: Any) -> dict[str, Any] | None:
    """What the agent wrote to the disk, as it keeps it in the file (about once a minute
    and at a clean stop: this command runs in another process), or None before it did."""
    if stats.written_at is None:
        return None
    seconds, events = stats.written_seconds, stats.written_events
    return {
        "bytes": stats.written_bytes,
        "seconds": seconds,
        "events": events,
        "as_of": stats.written_at,
        "bytes_per_event": round(stats.written_bytes / events) if events else None,
        "bytes_per_day": round(stats.written_bytes / seconds * 86400) if seconds else None,
    }


def _written_line(stats: Any) -> str:
    found = _written(stats)
    if found is None:
        return (
            "written to disk by the agent: not known yet (the agent records it about once a"
            " minute, where the kernel counts it)"
        )
    parts = [f"{_size(found['bytes'])} in {_duration(found['seconds'])} of running"]
    if found["bytes_per_day"] is not None:
        parts.append(f"{_size(found['bytes_per_day'])} a day")
    if found["bytes_per_event"] is not None:
        parts.append(f"{_size(found['bytes_per_event'])} per event stored")
    return f"written to disk by the agent: {', '.join(parts)} (as of {_when(found['as_of'])})"


def _dead_letters(buf: Any, args: argparse.Namespace, _: int | None) -> int:
    _known_destination(buf, args.destination)
    letters = buf.dead_letters(args.destination, args.limit)
    if args.json:
        return _print_json([asdict(d) for d in letters])
    if not letters:
        print("no dead letters")
        return 0
    rows = [
        [d.id, d.destination, d.type, d.key, str(d.attempts), _when(d.dead_at), d.reason]
        for d in letters
    ]
    print(
        _table(["ID", "DESTINATION", "TYPE", "MACHINE", "ATTEMPTS", "DEAD SINCE", "REASON"], rows)
    )
    return 0


def _show(buf: Any, args: argparse.Namespace, _: int | None) -> int:
    event = buf.show(args.id)
    if event is None:
        print(f"floorgate buffer: no event {args.id} in {buf.path}", file=sys.stderr)
        return 1
    payload: Any
    try:
        payload = json.loads(event.payload)
    except ValueError:
        payload = event.payload.decode("utf-8", "replace")
    if args.json:
        return _print_json({**asdict(event), "payload": payload})
    print(f"id:       {event.id}\nseq:      {event.seq}\ntype:     {event.type}")
    print(f"machine:  {event.key}\ntime:     {event.time}\nbuffered: {_when(event.created)}")
    rows = [
        [d.destination, d.status, str(d.attempts), _when(d.updated), d.last_error or ""]
        for d in event.deliveries
    ]
    print(_table(["DESTINATION", "STATUS", "ATTEMPTS", "SINCE", "LAST ERROR"], rows))
    print(json.dumps(payload, indent=2))
    return 0


def _requeue(buf: Any, args: argparse.Namespace, _: int | None) -> int:
    _known_destination(buf, args.destination)
    count = buf.requeue(args.destination, None if args.all else args.id)
    if args.json:
        return _print_json({"requeued": count})
    print(f"requeued {count} dead letter(s); they are sent again with their ids")
    return 0


def _purge(buf: Any, args: argparse.Namespace, _: int | None) -> int:
    from agent.common.units import parse_duration

    _known_destination(buf, args.destination)
    before = None if args.older_than is None else time.time() - parse_duration(args.older_than)
    count = buf.purge_dead(args.destination, before)
    if args.json:
        return _print_json({"purged": count})
    print(f"purged {count} dead letter(s)")
    return 0


def _replay(buf: Any, args: argparse.Namespace, _: int | None) -> int:
    _known_destination(buf, args.destination)
    since = parse_time(args.since)
    until = None if args.until is None else parse_time(args.until)
    count = buf.replay(args.destination, since, until)
    if args.json:
        return _print_json({"replayed": count, "since": since, "until": until})
    print(
        f"{count} delivered event(s) of {args.destination} with event time from {since}"
        f"{f' until {until}' if until else ''} will be sent again with their ids"
    )
    return 0


# -- helpers ------------------------------------------------------------------------------


def parse_time(text: str) -> str:
    """An ISO 8601 time (no zone means UTC) or a duration ago ("2h"), as ISO 8601 UTC."""
    from agent.common.units import parse_duration

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.fromtimestamp(time.time() - parse_duration(text), UTC).isoformat()
        except ValueError:
            raise ValueError(
                f"{text!r} is not a time: use ISO 8601 (2025-06-01T08:00:00Z) or a duration"
                " ago (2h, 3d)"
            ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat()


def _known_destination(buf: Any, destination: str | None) -> None:
    if destination is None:
        return
    known = buf.destinations()
    if destination not in known:
        raise ValueError(
            f"destination {destination!r} has no events in this buffer;"
            f" known: {', '.join(known) or 'none'}"
        )


def _print_json(value: Any) -> int:
    print(json.dumps(value, indent=2, default=str))
    return 0


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _age(since: float | None, now: float) -> float | None:
    return None if since is None else round(max(0.0, now - since), 1)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor:
            return f"{seconds / factor:.1f}{unit}"
    return f"{seconds:.0f}s"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _size(size: int) -> str:
    units = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))
    for unit, factor in units:
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
