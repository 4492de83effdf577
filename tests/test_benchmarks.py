"""Benchmarks' --quick modes write their files with the documented fields (never timed)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_throughput_quick_writes_results(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--quick", "--out",
                    str(tmp_path)], cwd=REPO, check=True, capture_output=True, text=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["benchmark"] == "throughput"
    assert {"torch", "cpu_count", "python"} <= set(results["machine"])
    row = results["rows"][0]
    assert {"num_envs", "ceiling", "training", "ratio", "raw"} <= set(row)
    assert row["ceiling"]["min"] <= row["ceiling"]["median"] <= row["ceiling"]["max"]
    assert row["training"]["median"] > 0
    assert "| num_envs |" in (tmp_path / "results.md").read_text()
