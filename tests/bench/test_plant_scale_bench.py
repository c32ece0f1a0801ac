"""bench/plant_scale_bench.py in --quick mode through `make bench`'s harness: it runs end to
end (servers, agent, receiver) and reports its figures as rows of the shared shape. No
time, rate or keeping pace is asserted: the machine may be loaded by other work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_harness import ROW_KEYS

ROOT = Path(__file__).resolve().parents[2]
# The start of each figure the bench promises (the rest names sizes and durations).
FIGURES = (
    "agent CPU over ",
    "busiest thread's CPU",
    "main thread runnable but waiting for a CPU",
    "agent CPU per 1,000 signals",
    "RSS at the end of the window",
    "peak RSS (VmHWM)",
    "RSS per 1,000 signals",
    "samples reaching the rules",
    "events created by the rules",
    "events delivered",
    "Modbus server: register changes made",
    "OPC UA server: item changes made",
    "keeps pace: Modbus changes of the window delivered",
    "keeps pace: OPC UA changes of the window delivered",
    "backlog (pending) at the window's start",
    "backlog (pending) at the window's end",
    "backlog growth over the window",
    "keeps pace: every change delivered and the backlog flat",
    "load average (1 min) at the window's start",
)


@pytest.mark.slow
@pytest.mark.timeout(600)  # servers and an agent on a machine other tests may be loading
def test_quick_plant_scale_run_writes_its_rows(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--quick",
            "--only",
            "plant_scale",
            "--timeout",
            "400",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    assert report["scripts"][0]["name"] == "plant_scale_bench.py"
    assert report["scripts"][0]["status"] == "ok"
    rows = report["rows"]
    assert rows and all(set(row) >= ROW_KEYS for row in rows)
    assert {row["scenario"] for row in rows} == {"plant scale"}
    figures = [row["figure"] for row in rows]
    missing = [start for start in FIGURES if not any(f.startswith(start) for f in figures)]
    assert not missing, f"figures missing from the JSON: {missing}"
    for row in rows:
        assert isinstance(row["value"], float)
        assert isinstance(row["met"], bool | None)
        if row["ceiling"]:
            assert row["ratio"] == row["value"] / row["ceiling"]
    assert "plant scale" in done.stdout  # the printed table
