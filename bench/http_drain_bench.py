"""HTTP drain benchmark: a buffered backlog delivered to middleware on loopback.

    .venv/bin/python bench/http_drain_bench.py [--quick] [--json PATH]

A real SqliteBuffer (WAL, synchronous FULL) holding a backlog of production.count events
(200,000; 20,000 with --quick) is drained by the agent's own DeliveryLoop and
WebhookForwarder (batches of 500, claim -> POST -> ack) into a receiver running in its
own process, so the receiver's CPU is not taken from the agent. Two receivers:

- ``floorgate``: floorgate_demo.receiver.EventReceiver, the demo/test receiver that
  parses every event and keeps it by id;
- ``lean``: a raw ASGI app on uvicorn (h11), the same server stack as the floorgate one,
  that reads the body and answers 200 (what a middleware that queues the raw batch does).

The ceiling, per receiver, is a bare httpx client POSTing the same pre-serialised
500-event bodies one after another to a fresh receiver of the same kind: no buffer, no
claim, no ack. The receiver's CPU share is printed too: near 100 % means the receiver,
not the agent, is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn

from agent.config.common import RetryConfig
from agent.forwarders.http.config import HttpDestinationConfig
from agent.forwarders.http.forwarder import CONTENT_TYPE, WebhookForwarder
from agent.forwarders.loop import DeliveryLoop, DeliverySettings
from agent.monitoring.status import DestinationHealth
from agent.pipeline.events import Event, ProductionCountData, format_sequence, uuid7
from bench.common import CpuMeter, Row, cpu_seconds, finish, parser, row
from buffer.rows import EventRow
from buffer.sqlite import SqliteBuffer
from floorgate_demo.receiver import EventReceiver

SCENARIO = "drain to HTTP"
DESTINATION = "middleware"
BATCH = 500
TARGET_RATE = 50_000
RECEIVERS = ("floorgate", "lean")
LEAN_REPLY = b'{"accepted":true}'

Message = MutableMapping[str, Any]


# -- the receiver process ----------------------------------------------------------


async def lean_app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """Read the whole body, answer 200."""
    if scope["type"] != "http":
        return
    more_body = True
    while more_body:  # http.request messages; an http.disconnect has no more_body
        more_body = (await receive()).get("more_body", False)
    found = scope["method"] == "POST" and scope["path"] == "/events"
    status, body = (200, LEAN_REPLY) if found else (404, b"")
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve(kind: str) -> None:
    """Run one receiver on a free loopback port, print the port, serve until stdin ends."""
    if kind == "floorgate":
        receiver = EventReceiver()
        port = await receiver.start()
        stop = receiver.stop
    else:
        # IPPROTO_TCP, not 0: only then does asyncio set TCP_NODELAY on accepted
        # connections (uvicorn writes a response's head and body separately). Listening
        # now: connections wait in the backlog until uvicorn serves.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        config = uvicorn.Config(
            lean_app,
            interface="asgi3",
            log_config=None,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            server_header=False,
            date_header=False,
            proxy_headers=False,
            timeout_keep_alive=75,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        port = int(sock.getsockname()[1])

        async def stop() -> None:
            server.should_exit = True
            await task

    print(port, flush=True)
    await asyncio.to_thread(sys.stdin.read)  # the benchmark closes our stdin to stop us
    await stop()


@contextlib.asynccontextmanager
async def receiver_process(kind: str) -> AsyncIterator[tuple[str, CpuMeter]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        kind,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            port = int((await proc.stdout.readline()).decode().strip())
        yield f"http://127.0.0.1:{port}/events", CpuMeter(proc.pid)
    finally:
        proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the backlog -------------------------------------------------------------------


def backlog_rows(count: int) -> list[EventRow]:
    """Real production.count events, as the engine would have buffered them."""
    now = datetime.now(UTC)
    data = ProductionCountData.model_validate(
        {
            "machine": "press-07",
            "signal": "press-07.good",
            "kind": "good",
            "quantity": 12,
            "window_start": now,
            "window_end": now,
        }
    )
    rows = []
    for n in range(count):
        event = Event(
            id=uuid7(),
            source=f"/plant/stamping/line1/press-{n % 16:02d}",
            type="production.count",
            time=now,
            sequence=format_sequence(n + 1),
            agentid="bench",
            data=data,
        )
        rows.append(
            EventRow(
                id=event.id,
                type="production.count",
                key=f"press-{n % 16:02d}",
                time=now.isoformat(),
                payload=event.to_json(),
                destinations=(DESTINATION,),
            )
        )
    return rows


class CountingBuffer(SqliteBuffer):
    """Sets ``drained`` once ``expected`` deliveries were acknowledged (durably)."""

    expected = 0
    acked = 0
    drained: asyncio.Event | None = None

    async def ack(self, destination: str, seqs: Sequence[int]) -> None:
        await super().ack(destination, seqs)
        self.acked += len(seqs)
        if self.drained is not None and self.acked >= self.expected:
            self.drained.set()


async def drain(
    path: Path, rows: list[EventRow], url: str, cpu: CpuMeter
) -> tuple[float, float, float]:
    """Events/s through DeliveryLoop + WebhookForwarder, the receiver's CPU % and the
    agent's CPU µs per event (this process: the loop, httpx and the SQLite threads)."""
    buffer = await CountingBuffer.open(path, synchronous="full")
    try:
        for first in range(0, len(rows), 1000):
            await buffer.append(rows[first : first + 1000])
        assert isinstance(buffer, CountingBuffer)
        buffer.expected, buffer.drained = len(rows), asyncio.Event()
        config = HttpDestinationConfig.model_validate(
            {"name": DESTINATION, "type": "http", "url": url, "batch_size": BATCH}
        )
        health = DestinationHealth(name=DESTINATION, type="http")
        loop = DeliveryLoop(
            WebhookForwarder(config),
            buffer,
            DeliverySettings(batch_size=BATCH, retry=RetryConfig()),
            health,
            asyncio.Event(),
        )
        agent_cpu = cpu_seconds(os.getpid())
        cpu.start()
        began = time.perf_counter()
        task = asyncio.create_task(loop.run())
        try:
            async with asyncio.timeout(300):
                await buffer.drained.wait()
            elapsed = time.perf_counter() - began
            receiver_cpu = cpu.stop()
            agent_cpu = cpu_seconds(os.getpid()) - agent_cpu
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if health.dead:
            raise RuntimeError(f"{health.dead} events dead-lettered: {health.last_error}")
    finally:
        await buffer.close()
    return len(rows) / elapsed, receiver_cpu, agent_cpu / len(rows) * 1e6


async def bare_httpx(rows: list[EventRow], url: str, cpu: CpuMeter) -> tuple[float, float]:
    """Events/s of sequential POSTs of pre-serialised 500-event bodies, receiver CPU %."""
    bodies = [
        b"[" + b",".join(r.payload for r in rows[i : i + BATCH]) + b"]"
        for i in range(0, len(rows), BATCH)
    ]
    headers = {"Content-Type": CONTENT_TYPE}
    async with httpx.AsyncClient(timeout=30) as client:
        await client.post(url, content=b"[]", headers=headers)  # open the connection
        cpu.start()
        start = time.perf_counter()
        for body in bodies:
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()
        elapsed = time.perf_counter() - start
    return len(rows) / elapsed, cpu.stop()


async def run(quick: bool) -> list[Row]:
    count = 20_000 if quick else 200_000
    rows = backlog_rows(count)
    results: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fg-drain-") as name:
        for kind in RECEIVERS:
            async with receiver_process(kind) as (url, cpu):
                path = Path(name) / f"{kind}.db"
                rate, receiver_cpu, per_event = await drain(path, rows, url, cpu)
            async with receiver_process(kind) as (url, cpu):
                ceiling, ceiling_cpu = await bare_httpx(rows, url, cpu)
            results.append(
                row(
                    SCENARIO,
                    f"events/s, {count:,} backlog -> {kind} receiver",
                    rate,
                    "events/s",
                    ceiling=ceiling,
                    ceiling_label=f"bare httpx, {BATCH}-event bodies, same receiver",
                    target=">= 50,000/s",
                    met=rate >= TARGET_RATE,
                )
            )
            results.append(
                row(SCENARIO, f"agent CPU per event drained ({kind} receiver)", per_event, "µs")
            )
            results.append(
                row(
                    SCENARIO,
                    f"{kind} receiver CPU while draining (bare httpx run: {ceiling_cpu:.0f} %)",
                    receiver_cpu,
                    "% of a core",
                )
            )
    return results


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--serve", choices=RECEIVERS, help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    finish(asyncio.run(run(args.quick)), args.json)


if __name__ == "__main__":
    main()
