"""
The benchmark runs end to end (bench/run.py --smoke): every workload row is
printed, and every implementation measured a number in every row -- except
the rows of the real clients (redis-benchmark, wrk) where they are not
installed, which must then say they were skipped.  No timing is checked: a
benchmark is not a test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"

WORKLOADS = [
    "bulk_send",
    "bulk_recv",
    "client_pingpong",
    "client_pipelined",
    "client_seq_conns",
    "client_conc_conns",
    "server_pingpong",
    "server_pipelined",
    "server_seq_conns",
    "server_conc_conns",
    "tls_server_pingpong",
    "tls_server_conc_conns",
    "both_pingpong",
    "both_seq_conns",
    "redis_ping_P16",
    "redis_ping_P1",
    "wrk_keepalive",
    "idle_conns",
    "tls_bulk",
    "tls_pingpong",
    "tls_idle_conns",
    "tls_pending_handshakes",
]
MEMORY = {"idle_conns", "tls_idle_conns", "tls_pending_handshakes"}
NEEDS = {
    "redis_ping_P16": "redis-benchmark",
    "redis_ping_P1": "redis-benchmark",
    "wrk_keepalive": "wrk",
}
NUMBER = re.compile(r"^-?[0-9][0-9,]*(\.[0-9]+)?$")


def _tagged_pids(tag: str) -> set[int]:
    """The processes whose environment holds C{tag}: those this test started."""
    marker = f"TWISTED_TCP_BENCH_SMOKE={tag}".encode()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.add(int(entry))
    return pids


def _run(
    tmp_path: Path, tag: str, *args: str, script: Path = RUN
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """
    Run C{script} (bench/run.py) with C{args} (its processes tagged with
    C{tag}), which must succeed; return it and the lines of its tables.
    """
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TWISTED_TCP_BENCH_SMOKE": tag},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, [line for line in proc.stdout.splitlines() if line.startswith("| ")]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_benchmark_smoke(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    tag = uuid.uuid4().hex
    bench_files = set(os.listdir(ROOT / "bench"))
    proc, table = _run(tmp_path, tag, "--smoke", "--results", str(results))
    header = _cells(table[0])
    impls = [name for name in ("twisted", "twisted_tcp", "asyncio", "uvloop") if name in header]
    assert impls[:3] == ["twisted", "twisted_tcp", "asyncio"], header
    rows = {}
    for line in table[2:]:
        cells = _cells(line)
        if len(cells) == len(header):
            rows.setdefault(cells[0], dict(zip(header, cells, strict=True)))
    for workload in WORKLOADS:
        assert workload in rows, f"no row for {workload}:\n{proc.stdout}"
        tool = NEEDS.get(workload)
        if tool and shutil.which(tool) is None:
            assert rows[workload]["verdict"].startswith("skipped: "), rows[workload]
            assert tool in rows[workload]["verdict"]
            continue
        for impl in impls:
            value = rows[workload][impl]
            assert NUMBER.match(value), f"{workload}/{impl}: {value!r}\n{proc.stderr}"
            if workload not in MEMORY:  # a few connections: RSS may not grow at all
                assert float(value.replace(",", "")) > 0

    text = results.read_text()
    assert "nproc" in text and "Twisted" in text
    for workload in WORKLOADS:
        assert f"| {workload} |" in text
    # Nothing left behind: no process of this run, no file in bench/.
    if os.path.isdir("/proc"):
        assert not _tagged_pids(tag)
    assert set(os.listdir(ROOT / "bench")) <= bench_files


def _git_checkout() -> bool:
    """Whether the tree under test is a git checkout that git can read."""
    if shutil.which("git") is None:
        return False
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.mark.skipif(not _git_checkout(), reason="needs git and a git checkout")
def test_benchmark_before_measures_another_revision(tmp_path: Path) -> None:
    # --before REF: the twisted_tcp of REF is one more column, measured in the
    # same rounds (the worker refuses to count if it imported another one).
    tag = uuid.uuid4().hex
    bench_files = set(os.listdir(ROOT / "bench"))
    only = "server_seq_conns,client_seq_conns"
    proc, table = _run(
        tmp_path, tag, "--smoke", "--only", only, "--before", "HEAD", "--no-results"
    )
    assert "note: before: the twisted_tcp of HEAD (" in proc.stderr
    header = _cells(table[0])
    assert "before" in header and "twisted_tcp ÷ before" in header, header
    for line in table[2:4]:
        row = dict(zip(header, _cells(line), strict=True))
        assert NUMBER.match(row["before"]), row
        assert row["twisted_tcp ÷ before"].endswith("x"), row
    if os.path.isdir("/proc"):
        assert not _tagged_pids(tag)
    assert set(os.listdir(ROOT / "bench")) <= bench_files


def test_benchmark_before_refuses_an_unknown_revision(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--before", "no-such-revision-here"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "--before no-such-revision-here:" in proc.stderr, proc.stderr


def test_gc_cost_runs(tmp_path: Path) -> None:
    # bench/gc_cost.py end to end, on a few connections: a row per server,
    # numbers in every cell (none is checked: a benchmark is not a test).
    tag = uuid.uuid4().hex
    few = ("--clients", "2", "--per-client", "3", "--rounds", "1")
    proc, table = _run(tmp_path, tag, *few, script=ROOT / "bench" / "gc_cost.py")
    rows = {cells[0]: cells[1:] for cells in map(_cells, table[2:])}
    assert set(rows) == {"twisted", "twisted_tcp"}, proc.stdout
    for cells in rows.values():
        assert all(re.fullmatch(r"([0-9./ ]|none)+", cell) for cell in cells), cells
    if os.path.isdir("/proc"):
        assert not _tagged_pids(tag)
