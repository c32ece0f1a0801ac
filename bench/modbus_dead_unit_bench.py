"""Dead Modbus unit benchmark: how a silent unit id slows its healthy neighbour on one connection.

    .venv/bin/python bench/modbus_dead_unit_bench.py [--quick] [--json PATH]

One simulated device (floorgate_demo.simulator.SimulatorServer) on 127.0.0.1 serves unit
id 2 only; requests for unit id 1 are never answered (pymodbus's server drops requests
for a unit id it does not serve), like a powered-off device behind a TCP gateway. One
ModbusDriver in this process reads one block from each unit on one TCP connection
(scan_interval 200 ms, timeout 500 ms, retries 2, backoff_max 5 s). After unit 1 has
been found dead (its first failure costs 1 + retries timeouts, once), for a window of
30 s (10 s with --quick), counted at the server:

- the gap between two reads of the healthy unit 2: p50 and max. A probe of the dead unit
  is one request without retries, so it delays the next poll by one timeout at most: the
  max stays within scan_interval + timeout (it was (1 + retries) timeouts per probe when
  probes were retried);
- requests sent to the dead unit, against what its backoff (200 ms doubling to 5 s after
  each failed probe) allows in the window;
- polls of unit 2 in the window, against one per scan_interval: each probe may cost
  the ticks its timeout spans (the schedule skips them rather than bursting).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.pdu import ModbusPDU

from bench.common import Row, finish, parser, row
from drivers.base import Quality, Sample
from drivers.modbus.config import ModbusTcpConfig
from drivers.modbus.driver import ModbusDriver
from floorgate_demo.simulator import SimulatedLine, SimulatorServer

SCENARIO = "Modbus dead unit"
SCAN = 0.2
TIMEOUT = 0.5
RETRIES = 2
BACKOFF_MAX = 5.0
HEALTHY, DEAD = 2, 1


class TimingServer(SimulatorServer):
    """A simulated device that notes when each request arrived, per unit id."""

    def __init__(self, line: SimulatedLine, **kwargs: Any) -> None:
        super().__init__(line, **kwargs)
        self.arrivals: dict[int, list[float]] = {HEALTHY: [], DEAD: []}

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.arrivals.setdefault(pdu.dev_id, []).append(time.monotonic())
        return super()._trace_pdu(sending, pdu)


def source_config(port: int) -> ModbusTcpConfig:
    signals = [
        {"name": f"u{unit}.{name}", "address": address, "device_address": unit}
        for unit in (DEAD, HEALTHY)
        for name, address in (("state", 0), ("reason", 1))
    ]
    return ModbusTcpConfig.model_validate(
        {
            "type": "modbus_tcp",
            "name": "gateway",
            "host": "127.0.0.1",
            "port": port,
            "scan_interval": f"{SCAN * 1000:g}ms",
            "timeout": f"{TIMEOUT * 1000:g}ms",
            "retries": RETRIES,
            "backoff_max": f"{BACKOFF_MAX:g}s",
            "signals": signals,
        }
    )


def probes_allowed(elapsed: float) -> int:
    """Most probes the backoff allows within ``elapsed`` seconds of the poll that found
    the unit dead: the first ``SCAN`` after it, then twice as long each time, capped."""
    count, due, delay = 0, 0.0, SCAN
    while True:
        due += delay
        if due > elapsed:
            return count
        count += 1
        delay = min(BACKOFF_MAX, delay * 2)


async def measure(window: float) -> dict[str, Any]:
    async with TimingServer(SimulatedLine(seed=7), unit_ids=(HEALTHY,)) as server:
        await server.start_tcp("127.0.0.1", 0)
        driver = ModbusDriver(source_config(server.port))
        batches: list[list[Sample]] = []
        first_poll = asyncio.Event()  # done: unit 1 found dead (with its retries)

        async def sink(batch: Any) -> None:
            batches.append(list(batch))
            first_poll.set()

        task = asyncio.create_task(driver.run(sink))
        try:
            async with asyncio.timeout(30):
                await first_poll.wait()
            start = time.monotonic()
            dead_before = len(server.arrivals[DEAD])
            await asyncio.sleep(window)
            end = time.monotonic()
            dead_requests = len(server.arrivals[DEAD]) - dead_before
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    reads = [t for t in server.arrivals[HEALTHY] if start <= t <= end]
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    healthy_bad = sum(
        1
        for batch in batches
        for sample in batch
        if sample.signal.startswith(f"u{HEALTHY}.") and sample.quality is not Quality.GOOD
    )
    return {
        "gaps": gaps,
        "polls": len(reads),
        "dead_requests": dead_requests,
        # the poll that found unit 1 dead began at most its retries and one scan earlier
        "allowed": probes_allowed(end - start + (1 + RETRIES) * TIMEOUT + SCAN),
        "window": end - start,
        "healthy_bad": healthy_bad,
        "reconnects": driver.health.reconnects,
    }


async def run(quick: bool) -> list[Row]:
    window = 10.0 if quick else 30.0
    found = await measure(window)
    if found["healthy_bad"] or found["reconnects"]:
        raise RuntimeError(
            f"unit {HEALTHY} had {found['healthy_bad']} bad samples and the connection "
            f"{found['reconnects']} reconnects: the dead unit disturbed it"
        )
    gaps_ms = [gap * 1000 for gap in found["gaps"]]
    p50, worst = statistics.median(gaps_ms), max(gaps_ms)
    bound_ms = (SCAN + TIMEOUT) * 1000
    ticks = found["window"] / SCAN
    # A probe at the end of a poll makes it overrun by one timeout: the schedule skips
    # the ticks that passed meanwhile, and no more.
    expected = ticks - found["dead_requests"] * math.ceil(TIMEOUT / SCAN) - 1
    setup = f"scan {SCAN * 1000:g} ms, timeout {TIMEOUT * 1000:g} ms, retries {RETRIES}"
    return [
        row(
            SCENARIO,
            f"healthy unit's poll gap p50, neighbour dead ({setup})",
            p50,
            "ms",
            ceiling=SCAN * 1000,
            ceiling_label="scan_interval",
            target=f"~ {SCAN * 1000:g} ms",
            met=p50 <= SCAN * 1000 * 1.25,
        ),
        row(
            SCENARIO,
            "healthy unit's poll gap max, neighbour dead",
            worst,
            "ms",
            ceiling=bound_ms,
            ceiling_label="scan_interval + 1 timeout",
            target=f"<= {bound_ms:g} ms (retried probes: {(1 + RETRIES) * TIMEOUT * 1000:g} ms"
            " of timeouts each)",
            met=worst <= bound_ms,
        ),
        row(
            SCENARIO,
            f"healthy unit's polls in {found['window']:.0f} s",
            found["polls"],
            "polls",
            ceiling=ticks,
            ceiling_label="one per scan_interval",
            target=f">= {expected:.0f} (ticks less {math.ceil(TIMEOUT / SCAN)} per probe)",
            met=found["polls"] >= expected,
        ),
        row(
            SCENARIO,
            f"requests to the dead unit in {found['window']:.0f} s",
            found["dead_requests"],
            "requests",
            ceiling=found["allowed"],
            ceiling_label=f"backoff {SCAN:g} s doubling to {BACKOFF_MAX:g} s",
            target="<= one per backoff step",
            met=found["dead_requests"] <= found["allowed"],
        ),
    ]


def main() -> None:
    args = parser(__doc__).parse_args()
    finish(asyncio.run(run(args.quick)), args.json)


if __name__ == "__main__":
    main()
