"""`make bench`'s harness: it runs a real benchmark end to end and reports every script,
including one that fails, as rows of the shared shape. No time or rate is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run as harness

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = {
    "scenario",
    "figure",
    "value",
    "unit",
    "ceiling",
    "ceiling_label",
    "ratio",
    "target",
    "met",
}


@pytest.mark.slow
@pytest.mark.timeout(900)  # a real benchmark run on a machine other tests may be loading
def test_quick_ingest_run_writes_one_report_of_rows(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--only", "ingest", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(output.read_text())
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1
    assert report["scripts"] == [
        {"name": "ingest_bench.py", "seconds": report["scripts"][0]["seconds"], "status": "ok"}
    ]
    rows = report["rows"]
    assert rows and all(set(row) >= ROW_KEYS for row in rows)
    assert {row["scenario"] for row in rows} == {"ingest"}
    for row in rows:
        assert isinstance(row["value"], float) and row["value"] > 0
        assert isinstance(row["met"], bool | None)
        if row["ceiling"] is not None:
            assert row["ratio"] == row["value"] / row["ceiling"]
    assert any(row["ceiling"] for row in rows), "the ceiling is measured in the same run"
    assert "scenario" in done.stdout and "events/s" in done.stdout  # the printed table


def test_a_failing_script_becomes_a_row_that_says_so(tmp_path: Path) -> None:
    script = tmp_path / "broken_bench.py"
    script.write_text("import sys\nprint('cannot reach the broker')\nsys.exit(3)\n")
    rows, status = harness.run_script(script, quick=True, timeout=60)
    assert status == "failed"
    assert len(rows) == 1
    assert set(rows[0]) >= ROW_KEYS
    assert rows[0]["scenario"] == "broken"
    assert rows[0]["met"] is False and rows[0]["value"] is None
    assert "exit 3" in rows[0]["figure"] and "cannot reach the broker" in rows[0]["figure"]


@pytest.mark.slow
def test_a_script_over_its_time_limit_becomes_a_row_and_its_children_are_killed(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "child.pid"
    script = tmp_path / "slow_bench.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    rows, status = harness.run_script(script, quick=True, timeout=5)
    assert status == "timeout"
    assert rows[0]["scenario"] == "slow" and rows[0]["met"] is False
    assert "timed out after 5 s" in rows[0]["figure"]
    child = int(pid_file.read_text())
    # The grandchild (an agent or a server, in a real benchmark) went with the group: it
    # is gone or a zombie waiting for init to reap it.
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
