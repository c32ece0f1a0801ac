"""`make bench`: run every bench/*_bench.py, print one table, write bench/results/latest.json.

    .venv/bin/python bench/run.py [--quick] [--only NAME ...] [--timeout SECONDS]

Each benchmark runs in its own process, one after another (so they do not load each
other's CPU), as ``<script> --json <tmp file>`` (plus ``--quick``), within a time limit.
Its rows are collected as they are. A script that fails, times out or writes no rows
becomes a row saying so, with the end of its output: nothing is hidden.

``--only ingest memory_start`` runs bench/ingest_bench.py and bench/memory_start_bench.py
(names without ``_bench.py``). The JSON file holds the machine, the command, when, how
long each script took, and the rows::

    {"machine": {...}, "command": "...", "started": "...", "quick": bool,
     "scripts": [{"name", "seconds", "status"}], "rows": [...]}

Figures are comparable within one run (value and ceiling are measured in the same run
on the same machine); on a machine shared with other work, read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Row, format_table, machine

BENCH_DIR = ROOT / "bench"
RESULTS = BENCH_DIR / "results" / "latest.json"
TIMEOUT = 300.0  # per script; the plant bench with its flash phase takes ~3 minutes
QUICK_TIMEOUT = 90.0
ROW_KEYS = ("scenario", "figure", "value", "unit", "ceiling", "ceiling_label", "ratio")


def scripts(only: list[str] | None) -> list[Path]:
    found = sorted(BENCH_DIR.glob("*_bench.py"))
    if not only:
        return found
    names = {path.name.removesuffix("_bench.py"): path for path in found}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise SystemExit(f"no bench/<name>_bench.py for {unknown}; found: {sorted(names)}")
    return [names[name] for name in only]


def failure(name: str, what: str, output: str) -> Row:
    """The row of a script that did not deliver its figures."""
    tail = [line for line in output.strip().splitlines() if line.strip()][-1:] or [""]
    return {
        "scenario": name,
        "figure": f"{what}: {tail[0][:160]}".rstrip(": "),
        "value": None,
        "unit": "",
        "ceiling": None,
        "ceiling_label": None,
        "ratio": None,
        "target": None,
        "met": False,
        "error": output[-4000:],
    }


def valid(rows: Any) -> bool:
    return isinstance(rows, list) and all(
        isinstance(item, dict) and all(key in item for key in ROW_KEYS) for item in rows
    )


def run_script(path: Path, quick: bool, timeout: float) -> tuple[list[Row], str]:
    name = path.name.removesuffix("_bench.py")
    with tempfile.TemporaryDirectory(prefix="fg-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        command = [sys.executable, str(path), "--json", str(out)]
        if quick:
            command.append("--quick")
        code, output = execute(command, timeout)
        if code is None:
            return [failure(name, f"timed out after {timeout:g} s", output)], "timeout"
        if code != 0:
            return [failure(name, f"failed (exit {code})", output)], "failed"
        try:
            rows = json.loads(out.read_text())
        except (OSError, ValueError):
            return [failure(name, "wrote no JSON rows", output)], "failed"
    if not valid(rows) or not rows:
        return [failure(name, "wrote rows of the wrong shape", json.dumps(rows)[:2000])], "failed"
    return rows, "ok"


def execute(command: list[str], timeout: float) -> tuple[int | None, str]:
    """Run a benchmark in a session of its own: (exit code, or None when it ran out of
    time; its output). Whatever is left of its process group afterwards (agents and
    servers it started, when it was killed or crashed) is killed too, so nothing it
    started outlives the run or loads the next benchmark's CPU."""
    with subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
            _kill_group(proc.pid)
            output, _ = proc.communicate()
        _kill_group(proc.pid)
    return code, output or ""


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    cli.add_argument("--quick", action="store_true", help="short runs (figures less stable)")
    cli.add_argument("--only", nargs="+", metavar="NAME", help="e.g. ingest http_drain")
    cli.add_argument("--timeout", type=float, default=None, help="seconds per script")
    cli.add_argument("--output", type=Path, default=RESULTS, help=f"default {RESULTS}")
    args = cli.parse_args(argv)
    timeout = args.timeout or (QUICK_TIMEOUT if args.quick else TIMEOUT)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "scripts": [],
        "rows": [],
    }
    for path in scripts(args.only):
        print(f"running {path.name} ...", flush=True)
        t0 = time.monotonic()
        rows, status = run_script(path, args.quick, timeout)
        seconds = round(time.monotonic() - t0, 1)
        print(f"  {status} in {seconds:g} s", flush=True)
        report["scripts"].append({"name": path.name, "seconds": seconds, "status": status})
        report["rows"].extend(rows)
    info = report["machine"]
    print()
    print(format_table(report["rows"]))
    print(
        f"\nmachine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB,"
        f" Python {info['python']}; load average at start {info['load_average']}"
    )
    if info["load_average"][0] > 0.5 * (info["cores"] or 1):
        print(
            "note: the machine was busy with other work when the run started; the ratios"
            " hold better than the absolute figures. Re-run on an idle machine to publish."
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    print(f"written to {args.output}")
    broken = [s["name"] for s in report["scripts"] if s["status"] != "ok"]
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
