"""bench/flash_designs.py, the flash design study, runs end to end on a short window and
reports rows of the shared shape. The bytes written are not asserted (a tmpfs counts 0,
and the figure depends on the machine); the block sizes are: they are what the study
compares, and a compact block must stay well below the CloudEvents it stands for."""

from __future__ import annotations

from pathlib import Path

from bench import flash_designs
from tests.bench.test_bench_harness import ROW_KEYS


def _case(label_start: str) -> int:
    return next(
        n for n, case in enumerate(flash_designs.CASES, 1) if case.label.startswith(label_start)
    )


async def test_every_layout_runs_and_reports_its_figures(tmp_path: Path) -> None:
    rows_case = _case("rows, 7 commits/s, full")
    json_case = _case("JSON blocks in SQLite, 7/s")
    compact_case = _case("compact blocks in SQLite, 7/s, full")
    log_case = _case("compact blocks in an own log, 7/s, no fsync")
    found = await flash_designs.run_all(
        1.0, [rows_case, json_case, compact_case, log_case], str(tmp_path), warmup=0.3
    )

    for item in found:
        assert set(ROW_KEYS) <= set(item)
    figures = {item["figure"]: item["value"] for item in found}
    for n in (rows_case, json_case, compact_case, log_case):
        per_sample = [
            v for f, v in figures.items() if f.startswith(f"{n}. ") and "bytes written" in f
        ]
        assert len(per_sample) == 1 and per_sample[0] >= 0
    block = {
        n: next(v for f, v in figures.items() if f.startswith(f"{n}. ") and "the block itself" in f)
        for n in (json_case, compact_case, log_case)
    }
    assert 10 < block[json_case] < 60  # a CloudEvent of ~300 bytes, compressed in a round
    assert 0 < block[compact_case] < block[json_case] / 2
    assert 0 < block[log_case] < block[json_case] / 2
