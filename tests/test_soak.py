"""Soak (issue 11): memory stays flat over many explanations in one process (benchmarks/bench_soak.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rss_growth_after_warmup_stays_under_five_percent():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_soak.py"),
            "--explanations",
            "40",
            "--warmup",
            "10",
            "--every",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    curve = [tuple(float(v) for v in line.split()) for line in lines[1:-1]]
    assert [int(done) for done, _ in curve] == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    summary = json.loads(lines[-1])
    assert summary["rss_after_warmup_mb"] > 50  # a real process with torch loaded was measured
    assert summary["growth_after_warmup_pct"] < 5.0, lines
