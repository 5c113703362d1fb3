"""Smoke test of ``benchmarks/bench.py``: this library only, on the current backend,
at ``--tiny`` sizes. It checks that the harness runs and writes its files, not timings."""

import json
import subprocess
import sys
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"
#: One case per kind of layer the harness builds (LMU step by step and parallel,
#: LMUFeedforward, RNN(LMUCell), LSTM), and the plotted case.
CASES = ["psmnist-rnn", "seq-ff-raw", "seq-rnn", "long", "lstm"]


def test_bench_runs_tiny_cases(tmp_path):
    out, report, plot = tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "long.png"
    command = [
        sys.executable,
        str(BENCH),
        "--tiny",
        "--quick",
        "--no-peer",
        "--backends",
        keras.backend.backend(),
        "--cases",
        *CASES,
        "--out",
        str(out),
        "--report",
        str(report),
        "--plot",
        str(plot),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    results = data["results"]
    assert sorted({r["case"] for r in results}) == sorted(CASES)
    assert len([r for r in results if r["case"] == "long"]) == 2  # two lengths
    for result in results:
        assert "error" not in result, result
        assert len(result["train_s"]) == 1 and len(result["predict_s"]) == 1
        assert result["peak_rss_kib"] >= result["rss_after_build_kib"] > 0
        assert result["keras_lmu_file"].startswith(str(ROOT / "keras_lmu"))
    text = report.read_text()
    for case in CASES:
        assert f"`{case}`" in text
    assert plot.read_bytes().startswith(b"\x89PNG")
