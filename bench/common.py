"""What every floorgate benchmark shares: the row format, the command line, /proc readings
and the table.

A row is the JSON object of the benchmark convention (see bench/run.py)::

    {"scenario", "figure", "value", "unit", "ceiling", "ceiling_label", "ratio",
     "target", "met"}

``ratio`` is always value / ceiling. For a rate the ceiling is what the bare library
reaches, so 0.6 means 60 % of it; for a time or a size the "ceiling" is the floor a bare
interpreter pays, so 2.0 means twice that.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import logging
import math
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

Row = dict[str, Any]


def row(
    scenario: str,
    figure: str,
    value: float,
    unit: str,
    *,
    ceiling: float | None = None,
    ceiling_label: str | None = None,
    target: str | None = None,
    met: bool | None = None,
) -> Row:
    ratio = value / ceiling if ceiling else None
    return {
        "scenario": scenario,
        "figure": figure,
        "value": float(value),
        "unit": unit,
        "ceiling": None if ceiling is None else float(ceiling),
        "ceiling_label": ceiling_label,
        "ratio": ratio,
        "target": target,
        "met": met,
    }


def parser(description: str | None) -> argparse.ArgumentParser:
    """The two options every benchmark takes, plus whatever the caller adds."""
    first_line = description.strip().splitlines()[0] if description else None
    cli = argparse.ArgumentParser(description=first_line)
    cli.add_argument("--quick", action="store_true", help="a short run (figures less stable)")
    cli.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return cli


def agent_parser(description: str | None) -> argparse.ArgumentParser:
    """``parser`` plus the options of the benches that run `floorgate run` in its own
    process on a plant: another checkout, its environment, the measured window."""
    cli = parser(description)
    cli.add_argument(
        "--agent-tree", type=Path, default=ROOT, help="run the agent from this checkout"
    )
    cli.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="agent environment"
    )
    cli.add_argument("--window", type=float, default=None, help="seconds measured")
    return cli


def finish(rows: Sequence[Row], json_path: Path | None) -> None:
    """Print the table and, when asked, write the rows as JSON."""
    print(format_table(rows))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(list(rows), indent=1))


# -- figures -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: int) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (its threads included)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time per thread id of a process (the main thread's id is the pid)."""
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = _stat_cpu(task / "stat")
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
    return found


def _stat_cpu(path: Path) -> float:
    text = path.read_text()
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (peak RSS), RssAnon... of a process, in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if name.startswith(("Vm", "Rss")) and len(parts) == 2 and parts[1] == "kB":
            found[name] = int(parts[0]) * 1024
    return found


def io_counters(pid: int) -> dict[str, int] | None:
    """/proc/<pid>/io of a process, its threads included (ended ones too): ``wchar`` (bytes
    handed to write() and the like, sockets and pipes included), ``write_bytes`` (bytes of
    page cache it dirtied on a block device: what goes to the disk), and
    ``cancelled_write_bytes`` (dirty pages it truncated before they reached the disk).
    None when the file cannot be read (another user's process, no task I/O accounting)."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if value.strip().isdigit():
            found[name.strip()] = int(value)
    return found


def disk_written(io: dict[str, int]) -> int:
    """What a process sent to the disk: write_bytes less the dirty pages it truncated
    away before writeback (a WAL cut back to its size limit)."""
    return io.get("write_bytes", 0) - io.get("cancelled_write_bytes", 0)


class CpuMeter:
    """CPU % of one core used by a process between start() and stop()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._cpu = cpu_seconds(self.pid)
        self._wall = time.monotonic()

    def stop(self) -> float:
        cpu = cpu_seconds(self.pid) - self._cpu
        wall = time.monotonic() - self._wall
        return 100.0 * cpu / wall


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(total / 1024**3, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


# -- the table -----------------------------------------------------------------------

COLUMNS = ("scenario", "figure", "value", "ceiling", "ratio", "target", "met")


def number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _cells(item: Row) -> list[str]:
    ceiling = number(item.get("ceiling"))
    if item.get("ceiling_label") and item.get("ceiling") is not None:
        ceiling = f"{ceiling} ({item['ceiling_label']})"
    ratio = item.get("ratio")
    met = item.get("met")
    return [
        str(item.get("scenario", "?")),
        str(item.get("figure", "?")),
        number(item.get("value"), str(item.get("unit") or "")),
        ceiling,
        "-" if ratio is None else f"{ratio:.2f}",
        str(item.get("target") or "-"),
        "-" if met is None else ("yes" if met else "NO"),
    ]


def format_table(rows: Sequence[Row]) -> str:
    cells = [list(COLUMNS), *(_cells(item) for item in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


# -- the agent as a process ------------------------------------------------------------


class NotifySocket:
    """The datagram socket systemd would hold ($NOTIFY_SOCKET): tells when READY=1 came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.setblocking(False)

    async def wait_ready(self) -> float:
        """perf_counter() when a message holding READY=1 arrived (wrap in a timeout)."""
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.sock_recv(self._sock, 4096)
            if b"READY=1" in message.split(b"\n"):
                return time.perf_counter()

    def close(self) -> None:
        self._sock.close()


def raw_sqlite_rate(
    path: Path, batches: Sequence[Sequence[tuple[Any, ...]]], synchronous: str
) -> float:
    """The SQLite ceiling: rows/s of bare ``executemany`` into an events-like table in
    WAL mode, one transaction per batch. Rows: (id, type, key, time, payload, size)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
            " type TEXT, key TEXT, time TEXT, payload BLOB, size INTEGER, created REAL)"
        )
        start = time.perf_counter()
        for batch in batches:
            now = time.time()
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO events (id, type, key, time, payload, size, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*values, now) for values in batch],
            )
            conn.execute("COMMIT")
        return sum(len(batch) for batch in batches) / (time.perf_counter() - start)
    finally:
        conn.close()


def ensure_bytecode() -> None:
    """Compile the agent's modules, as the .deb does at install (packaging/build_deb.py
    runs compileall): with PYTHONDONTWRITEBYTECODE set (CI and this workplace set it),
    every start would otherwise compile them again, which no installed agent does."""
    for package in ("agent", "drivers", "buffer"):
        compileall.compile_dir(ROOT / package, quiet=1)


def start_agent(
    config: Path, log: Path, notify: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`floorgate run --config` as systemd would start it (NOTIFY_SOCKET when given),
    from compiled modules like an installed agent."""
    ensure_bytecode()
    extra = {"PYTHONUNBUFFERED": "1", **(env or {})}
    if notify is not None:
        extra["NOTIFY_SOCKET"] = str(notify)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, **extra},
        )


async def stop_agent(proc: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it has not stopped within ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(proc.wait, grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return await asyncio.to_thread(proc.wait)


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# One backlog event (a production count) as the memory and plant benches store it: id and
# sequence filled in with %.
PAYLOAD = (
    '{"specversion":"1.0","id":"%s","source":"/plant/area/line/press-07",'
    '"type":"production.count","time":"2026-01-01T00:00:00Z","datacontenttype":'
    '"application/json","sequence":"%020d","agentid":"bench","data":{"machine":"press-07",'
    '"signal":"press-07.good","kind":"good","quantity":12,"window_start":'
    '"2026-01-01T00:00:00Z","window_end":"2026-01-01T00:00:10Z"}}'
)


@contextlib.asynccontextmanager
async def server_process(script: str, *args: str) -> AsyncIterator[str]:
    """Run ``script`` with ``args`` as a server in its own process until the block ends
    (closing its stdin tells it to stop); yields its first line of output (what it
    serves: an endpoint, a port, a URL)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            first = (await proc.stdout.readline()).decode().strip()
        if not first:
            raise RuntimeError(f"server {Path(script).name} {' '.join(args)} did not start")
        yield first
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_receiver(
    on_body: Callable[[bytes], None] | None = None,
) -> tuple[asyncio.Server, str]:
    """An HTTP destination that takes everything, on 127.0.0.1: reads every request and
    answers 200 (keep-alive), handing each request's body to ``on_body`` first when given.
    Returns the server (serve with ``async with``) and the URL to POST events to."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif name.strip().lower() == b"transfer-encoding":
                        raise RuntimeError("chunked requests are not expected here")
                body = await reader.readexactly(length)
                if on_body is not None:
                    on_body(body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: 2\r\n\r\n{}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the agent closed the connection
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/events"


async def opcua_server(
    namespace_uri: str, folders: Sequence[tuple[str, Sequence[str]]]
) -> tuple[Any, str, list[Any]]:
    """A bare asyncua server on a free port of 127.0.0.1 (no security) with one folder of
    Double variables (value 0.0) per ``(folder, names)``, node ids
    ``ns=<namespace_uri>;s=<folder>`` and ``...;s=<name>``. Returns (server, endpoint, the
    variables' node ids in the order given); serve it with ``async with server``.

    A bare server rather than floorgate_demo's OpcUaSimulator, for two costs of the server
    that are no part of the agent's and that a small machine cannot carry beside it: the
    simulator puts every extra variable in one folder, and asyncua checks a new node
    against all of its siblings (40 s of CPU to add 5,000); and asyncua deep-copies every
    written value for each monitored item (0.8 s of CPU per round of 5,000 writes, so under
    load the server fell behind and the agent saw half the changes). Here each monitored
    item keeps the DataValue written as it is: write a new DataValue every time, and never
    change one afterwards."""
    from asyncua import Server, ua
    from asyncua.server.monitored_item_service import MonitoredItemValues

    def keep_value(self: MonitoredItemValues, value: ua.DataValue) -> None:
        self.old_dvalue, self.current_dvalue = self.current_dvalue, value

    MonitoredItemValues.set_current_datavalue = keep_value
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/plant/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(namespace_uri)
    nodes = []
    for folder_name, names in folders:
        folder = await server.nodes.objects.add_folder(
            ua.NodeId(folder_name, ns), ua.QualifiedName(folder_name, ns)
        )
        for name in names:
            variable = await folder.add_variable(
                ua.NodeId(name, ns), ua.QualifiedName(name, ns), 0.0, ua.VariantType.Double
            )
            nodes.append(variable.nodeid)
    return server, endpoint, nodes
