"""What the status page shows, as the JSON documents it polls: /api/status and /api/signals.

The judgement of health is /readyz's (agent.monitoring.report.health_report): this module
only picks from it and adds what a person at the box wants beside it: each machine's
state, counts and open alarms (from the rule engine), the dead letters with the command
that repairs them, the last hour of backlog and events/s, and every signal with its raw
and decoded value (from the drivers' tables of last reads).

Nothing here changes anything. No secret reaches the page: destinations are shown by
name and type (never a URL or a key), and every document is masked as the log is (every
secret the agent has read, and a URL's user:password@) before it is sent.
"""

from __future__ import annotations

import re
import shlex
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.common.secrets import secret_values
from agent.config.rules import CountKind
from agent.monitoring.history import History
from agent.monitoring.report import health_report
from agent.rules import AlarmRule, CounterRule, StateRule
from agent.service.logs import REDACTED, mask_secrets
from drivers.base import SignalRead

if TYPE_CHECKING:
    from agent.service.runtime import Agent

DEAD_LETTERS_SHOWN = 50
SIGNALS_SHOWN = 1000  # a plant source has thousands: the filter narrows them
_URL_CREDENTIALS = re.compile(r"(?<=://)[^\s/@\"']+@")


def mask(text: str) -> str:
    """Every secret read so far, and a URL's credentials (``user:pw@``), replaced."""
    return _URL_CREDENTIALS.sub(REDACTED + "@", mask_secrets(text, secret_values()))


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def history_figures(agent: Agent) -> tuple[int, int]:
    """(events pending delivery, events made so far): what the history keeps."""
    stats = agent.buffer_stats
    engine = agent.engine
    pending = sum(d.pending for d in stats.destinations.values())
    made = sum(engine.health.events_by_type.values()) if engine is not None else 0
    return pending, made


def machines(agent: Agent, shift_start: datetime | None) -> list[dict[str, Any]]:
    """Each machine's committed state and since when, its good and scrap parts of the
    current shift (those reported in it, kept with the events across restarts, plus those
    counted and not yet reported), and the alarms that are active."""
    engine = agent.engine
    rules = engine.rules if engine is not None else []
    totals = engine.shift_totals if engine is not None else {}
    rows: dict[str, dict[str, Any]] = {
        m.name: {
            "name": m.name,
            "area": m.area,
            "line": m.line,
            "state": None,
            "reason": None,
            "since": None,
            "good": None,
            "scrap": None,
            "alarms": [],
        }
        for m in agent.config.machines
    }
    for name, total in totals.items():
        if name in rows and total.start == shift_start:
            rows[name].update(good=total.good, scrap=total.scrap)
    for rule in rules:
        row = rows.get(rule.machine)
        if row is None:
            continue
        if isinstance(rule, StateRule) and rule.current is not None:
            state, reason, since = rule.current
            row.update(state=state.value, reason=reason, since=_iso(since))
        elif isinstance(rule, CounterRule):
            kind = "good" if rule.config.kind is CountKind.GOOD else "scrap"
            row[kind] = (row[kind] or 0) + rule.pending
        elif isinstance(rule, AlarmRule) and rule.active:
            row["alarms"].append(rule.config.name)
    return list(rows.values())


def _sources(agent: Agent, report: dict[str, Any]) -> list[dict[str, Any]]:
    types = {s.name: s.type for s in agent.config.sources}
    return [
        {
            "name": name,
            "type": types.get(name),
            "state": source["state"],
            "since": source["since"],
            "last_data_age_s": source["last_data_age_s"],
            "last_error": source["last_error"],
            "reads": source["reads"],
            "read_errors": source["read_errors"],
            "reconnects": source["reconnects"],
            "bad_signals": source["bad_signals"],
        }
        for name, source in report["sources"].items()
    ]


def _destinations(report: dict[str, Any]) -> list[dict[str, Any]]:
    keep = (
        "type",
        "state",
        "since",
        "pending",
        "oldest_pending_age_s",
        "dead_letters",
        "delivered",
        "last_error",
        "last_success",
        "next_retry_in_s",
    )
    return [
        {"name": name, **{key: dest[key] for key in keep}}
        for name, dest in report["destinations"].items()
    ]


def repair_commands(agent: Agent, destination: str) -> dict[str, str]:
    """The `floorgate buffer` commands that requeue or purge one destination's dead
    letters, on this agent's buffer file (they work while the agent runs)."""
    db = shlex.quote(str(agent.config.buffer_path))
    name = shlex.quote(destination)
    return {
        "requeue": f"floorgate buffer requeue --all --destination {name} --db {db}",
        "purge": f"floorgate buffer purge --dead --destination {name} --db {db}",
    }


async def dead_letters(agent: Agent, report: dict[str, Any]) -> dict[str, Any]:
    """The first dead letters with their reason and the command that requeues each, and
    the commands per destination. Read from the buffer only when its statistics say
    there are some."""
    total = report["buffer"]["dead_letters"]
    letters: list[dict[str, Any]] = []
    if total and agent.buffer is not None:
        db = shlex.quote(str(agent.config.buffer_path))
        for letter in await agent.buffer.dead_letters(limit=DEAD_LETTERS_SHOWN):
            letters.append(
                {
                    "seq": letter.seq,
                    "id": letter.id,
                    "type": letter.type,
                    "destination": letter.destination,
                    "reason": letter.reason,
                    "attempts": letter.attempts,
                    "dead_at": letter.dead_at,
                    "requeue": f"floorgate buffer requeue {shlex.quote(letter.id)} --db {db}",
                }
            )
    commands = {
        name: repair_commands(agent, name)
        for name, dest in report["destinations"].items()
        if dest["dead_letters"]
    }
    return {"total": total, "shown": letters, "commands": commands}


async def status_document(agent: Agent, history: History) -> dict[str, Any]:
    """/api/status: what the status page shows (see the module docstring)."""
    report = health_report(agent)
    buffer = report["buffer"]
    engine = agent.engine
    shift_start = None if engine is None else engine.shifts.start_of(datetime.now(UTC))
    return {
        "agent": report["agent"],
        "site": report["site"],
        "version": report["version"],
        "uptime_s": report["uptime_s"],
        "status": report["status"],
        "reasons": report["reasons"],
        "shift_start": _iso(shift_start),
        "machines": machines(agent, shift_start),
        "sources": _sources(agent, report),
        "destinations": _destinations(report),
        "buffer": {
            key: buffer[key]
            for key in (
                "path",
                "writable",
                "events",
                "size_bytes",
                "max_size",
                "full",
                "pending",
                "dead_letters",
                "oldest_pending_age_s",
            )
        },
        "disk": report["disk"],
        "dead_letters": await dead_letters(agent, report),
        "history": history.last_hour(time.time(), *history_figures(agent)),
    }


def _machines_of_signals(agent: Agent) -> dict[str, list[str]]:
    """signal -> the machines whose rules read it, or whose name is the part of the
    signal's name before its first dot (a template's ``press1.temperature``)."""
    result: dict[str, list[str]] = {}
    for rule in agent.engine.rules if agent.engine is not None else []:
        for signal in rule.signals:
            machines_of = result.setdefault(signal, [])
            if rule.machine not in machines_of:
                machines_of.append(rule.machine)
    names = {m.name for m in agent.config.machines}
    for source in agent.config.sources:
        for spec in source.signals:
            prefix = spec.name.partition(".")[0]
            machines_of = result.setdefault(spec.name, [])
            if prefix in names and prefix not in machines_of:
                machines_of.append(prefix)
    return result


def _signal_row(source: str, read: SignalRead, machines_of: list[str]) -> dict[str, Any]:
    sample = read.sample
    return {
        "signal": read.signal,
        "source": source,
        "machines": machines_of,
        "address": read.address,
        "data_type": read.data_type,
        "swap": read.swap,
        "unit": read.unit,
        "raw": read.raw,
        "value": None if sample is None else sample.value,
        "quality": None if sample is None else sample.quality.value,
        "error": None if sample is None else sample.error,
        "source_time": None if sample is None else _iso(sample.source_time),
        "changed": read.changed,
    }


def signals_document(agent: Agent, machine: str = "", name: str = "") -> dict[str, Any]:
    """/api/signals: every configured signal (those a machine's rules read when
    ``machine`` is given; those whose name holds ``name``, any case), at most
    SIGNALS_SHOWN of them, with its raw and decoded value."""
    machines_of = _machines_of_signals(agent)
    needle = name.strip().lower()
    rows: list[dict[str, Any]] = []
    matched = 0
    for driver in agent.drivers:
        for read in driver.signal_reads():
            of = machines_of.get(read.signal, [])
            if (machine and machine not in of) or (needle and needle not in read.signal.lower()):
                continue
            matched += 1
            if len(rows) < SIGNALS_SHOWN:
                rows.append(_signal_row(driver.name, read, of))
    return {
        "agent": agent.config.agent.id,
        "machines": [m.name for m in agent.config.machines],
        "matched": matched,
        "signals": rows,
    }
