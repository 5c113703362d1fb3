"""Smoke test of ``benchmarks/bench.py``: this library only, on the current backend,
at ``--tiny`` sizes. It checks that the harness runs and writes its files, not timings;
and, from the JSON of a full run, that the report's numbers and verdicts are the JSON's.
Each case and length is a process of its own, so every kind of model the harness
builds runs on one backend (TensorFlow), and two on the others."""

import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench.py"
#: One case per kind of layer the harness builds (LMU step by step and parallel,
#: LMUFeedforward, RNN(LMUCell), LSTM, Dense), and the plotted case; on the backends
#: other than TensorFlow, LMUFeedforward and the plotted case (LMU in parallel).
CASES = ["psmnist-rnn", "seq-ff-raw", "seq-rnn", "long", "lstm", "seq-dense-full"]
if keras.backend.backend() != "tensorflow":
    CASES = ["seq-ff-raw", "long"]


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
    # The report again from the JSON, with the notes of a machine instead of the
    # general ones.
    notes, again = tmp_path / "notes.md", tmp_path / "again.md"
    notes.write_text("- A note on this machine.\n")
    command = [sys.executable, str(BENCH), "--report-from", str(out), "--notes", str(notes)]
    command += ["--report", str(again), "--plot", str(tmp_path / "again.png")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = again.read_text()
    assert "- A note on this machine." in text
    assert all(note not in text for note in _bench_module().CPU_NOTES)


def test_only_a_full_run_writes_the_documented_report_by_default():
    bench = _bench_module()
    docs = ROOT / "docs"
    full = bench.default_paths(bench.parse_args(["--out", "/tmp/run.json"]))
    assert full == ("/tmp/run.json", str(docs / "benchmarks.md"), str(docs / "bench_long.png"))
    for option in ("--tiny", "--quick"):
        args = bench.parse_args([option, "--out", "/tmp/run.json"])
        assert bench.default_paths(args) == ("/tmp/run.json", "/tmp/run.md", "/tmp/run-long.png")
    args = bench.parse_args(["--tiny", "--report", "/tmp/r.md", "--plot", "/tmp/p.png"])
    assert bench.default_paths(args)[1:] == ("/tmp/r.md", "/tmp/p.png")


def test_keras_lmu_runs_its_own_conv_mode_where_this_library_has_another():
    bench = _bench_module()
    spec = {"case": "seq-ff-scan-full", "conv_mode": "scan", "peer_conv_mode": "fft"}
    own = {"library": bench.OWN}
    peer = {"library": bench.PEER}
    assert bench.spec_for(own, spec)["conv_mode"] == "scan"
    assert bench.spec_for(peer, spec)["conv_mode"] == "fft"
    assert spec["conv_mode"] == "scan"  # not changed in place


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_table_judges_the_best_backend():
    bench = _bench_module()

    def result(case, library, backend, train_s, rss=None, error=None):
        entry = {"case": case, "library": library, "backend": backend, "train": None}
        if train_s is not None:
            entry["train"] = {"median_s": train_s}
        if rss is not None:
            entry["peak_rss_kib"], entry["rss_after_build_kib"] = rss
        if error:
            entry["error"] = error
        return entry

    results = [
        result("psmnist-rnn", bench.PEER, "tensorflow", 0.6),
        result("psmnist-rnn", bench.OWN, "jax", 0.9),
        result("psmnist-rnn", bench.OWN, "tensorflow", 0.4),
        result("seq-rnn", bench.PEER, "tensorflow", 0.5),
        result("seq-rnn", bench.OWN, "jax", 0.6),
        result("seq-ff-raw", bench.PEER, "tensorflow", None, error="crashed"),
        result("seq-ff-raw", bench.OWN, "jax", 0.01),
        result("psmnist-ff", bench.PEER, "tensorflow", 2.0, rss=(3000, 1000)),
        result("psmnist-ff", bench.OWN, "jax", 0.05, rss=(1500, 1000)),
        result("seq-ff-full", bench.PEER, "tensorflow", 4.0, rss=(2000, 1000)),
        result("seq-ff-full", bench.OWN, "jax", 1.0, rss=(1600, 1000)),
        result("seq-dense-full", bench.OWN, "jax", 0.5, rss=(1550, 1000)),
        result("seq-dense-full", bench.PEER, "tensorflow", 0.5, rss=(1500, 1000)),
        result("lstm", bench.OWN, "jax", 3.0),
        result("lstm", bench.PEER, "tensorflow", 2.0),
    ]
    rows = {line.split(" |")[0]: line for line in bench.target_lines(results) if "`" in line}
    assert rows["| `psmnist-rnn` >= 1x keras-lmu"].endswith("| 1.5x | met |")
    assert rows["| `seq-rnn` >= 1x keras-lmu"].endswith("| 0.833x | **not met** |")
    assert rows["| `seq-ff-raw` >= 5x keras-lmu"].endswith("| keras-lmu failed |")
    assert rows["| `psmnist-ff` >= 20x keras-lmu"].endswith("| 40x | met |")
    # (1500 - 1000) / (3000 - 1000): a quarter of keras-lmu's increase.
    assert rows["| `psmnist-ff` peak RSS increase <= 0.5 of keras-lmu's"].endswith("| 0.25 | met |")
    assert rows["| `seq-ff-full` peak RSS increase <= 0.5 of keras-lmu's"].endswith(
        "| 0.60 | **not met** |"
    )
    # A Dense layer in the LMU's place: 550 of keras-lmu's 1000 (its seq-ff-full).
    floor = "| no LMU: `seq-dense-full`'s peak RSS increase over keras-lmu's `seq-ff-full`"
    assert rows[floor].endswith("| 0.55 | the floor of `seq-*-full` |")
    # Against the fastest LSTM (2.0 s): 40x, short of 50x.
    assert rows["| `psmnist-ff` >= 50x the fastest `lstm`"].endswith("| 40x | **not met** |")


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="one backend is enough")
def test_memory_and_piece_scripts_run():
    """``peak_memory.py`` (with PyTorch's tensor profile) and ``fft_pieces.py --joined``
    (the two forms of PyTorch's FFT convolution) run and print their results."""
    benchmarks = ROOT / "benchmarks"
    command = [sys.executable, str(benchmarks / "peak_memory.py"), "--case", "seq-ff-raw"]
    command += ["--steps", "1", "--tensors"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "seq-ff-raw on torch: 1 training steps, peak RSS" in done.stdout
    tensors = re.search(r"tensors at their peak in one more step: ([0-9.]+) MiB \(", done.stdout)
    assert tensors and float(tensors.group(1)) > 0, done.stdout[-3000:]
    command = [sys.executable, str(benchmarks / "fft_pieces.py"), "--repeats", "1"]
    command += ["--batch", "1", "--joined", "--piece-values"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "joined: train" in done.stdout and "2**17: train" in done.stdout


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow script")
def test_step_forms_script_runs_and_its_forms_agree():
    """``step_forms.py`` times its four forms of the recurrent step, whose gradients
    agree: the written-out gradient with TensorFlow's to float32 rounding, the
    block-low-rank transition's about as closely."""
    command = [sys.executable, str(ROOT / "benchmarks" / "step_forms.py"), "--repeats", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = r"^(\S+) .* ms .*gradient vs separate: (\S+) "
    differences = dict(re.findall(line, done.stdout, re.M))
    assert set(differences) == {"separate", "rounded", "written-gradient", "block-low-rank"}
    assert float(differences["written-gradient"]) < 1e-5
    assert float(differences["block-low-rank"]) < 1e-4
    assert float(differences["rounded"]) < 1e-3


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX script")
def test_scan_outputs_script_runs_and_its_forms_agree():
    """``scan_outputs.py`` times Keras's ``RNN(LMUCell)`` and two scans of the same cell
    on JAX; all three compute the same last output."""
    command = [sys.executable, str(ROOT / "benchmarks" / "scan_outputs.py")]
    command += ["--repeats", "1", "--steps", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = r"^(\S+) (forward|gradient) .* ms .*last output vs keras-rnn: (\S+)$"
    found = re.findall(line, done.stdout, re.M)
    assert {(name, kind) for name, kind, _ in found} == {
        (name, kind)
        for name in ("keras-rnn", "scan-outputs", "scan-last")
        for kind in ("forward", "gradient")
    }, done.stdout
    assert all(float(difference) < 1e-5 for _, _, difference in found), done.stdout


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="a JAX script")
def test_scan_weight_gradients_script_runs_and_its_gradients_agree():
    """``scan_weight_gradients.py`` times four forms of the paper model's step in plain
    JAX; the custom gradient (weights' gradients after the loop) equals JAX's own."""
    command = [sys.executable, str(ROOT / "benchmarks" / "scan_weight_gradients.py")]
    command += ["--repeats", "1", "--steps", "16", "--batch", "4", "--group", "8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    differences = dict(re.findall(r"^custom gradient of (\S+): (\S+) ", done.stdout, re.M))
    assert set(differences) == {"W", "U", "b", "e_x", "e_h", "e_m"}, done.stdout
    assert all(float(value) < 1e-4 for value in differences.values()), done.stdout
    timed = re.findall(r"^(.+): median \d+ ms", done.stdout, re.M)
    assert timed == ["default", "grouped (8 per iteration)", "weights-after-loop", "forward"]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="one backend is enough")
@pytest.mark.parametrize(
    "script, option, value, expected",
    [
        ("bench.py", "--repeats", "0", "expected an integer of 1 or more"),
        ("parallel.py", "--budget", "nan", "expected a finite number above 0"),
        ("numerics.py", "--discretizers", "exact", "invalid choice"),
        ("peak_memory.py", "--case", "seq-ff", "invalid choice"),
        ("scan_weight_gradients.py", "--group", "0", "expected an integer of 1 or more"),
    ],
)
def test_benchmark_scripts_name_a_bad_option(script, option, value, expected):
    command = [sys.executable, str(ROOT / "benchmarks" / script), option, value]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"argument {option}: {expected}" in done.stderr, done.stderr[-3000:]


def test_numerics_script_reports_that_it_measured_nothing(tmp_path):
    """Every memory asked for skipped (euler below its stability bound): the script
    says so and writes its JSON."""
    out = tmp_path / "numerics.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "numerics.py"), "--orders", "8"]
    command += ["--thetas", "10", "--steps", "20", "--discretizers", "euler", "--out", str(out)]
    command += ["--cache", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "nothing measured: every memory asked for was skipped" in done.stdout
    assert json.loads(out.read_text())["rows"] == []


def test_parallel_script_forms_start_from_the_same_weights(monkeypatch):
    """``parallel.py`` compares the forms of one model: each form, ``LMU``'s step by
    step one included (whose layer draws its weights in another order), starts from
    the same weights and computes the same outputs."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import parallel

    spec = dict(memory_d=2, order=8, theta=16, steps=24, batch=3, features=4, hidden=5)
    spec.update(trainable_theta=True, memory_to_memory=True, return_sequences=True)
    reference, x, _ = parallel.make_model(spec, "rnn")
    expected = reference.predict_on_batch(x)
    for form in ("lmu-rnn", "scan"):
        model, _, _ = parallel.make_model(spec, form)
        weights = model.get_weights()
        assert len(weights) == len(reference.get_weights()) == 5
        for weight, reference_weight in zip(weights, reference.get_weights(), strict=True):
            np.testing.assert_array_equal(weight, reference_weight)
        np.testing.assert_allclose(model.predict_on_batch(x), expected, atol=1e-5)


#: A full run of the harness (every case, keras-lmu included) that the report tests
#: below rewrite into the cases they need.
FULL_RUN = ROOT / "benchmarks" / "results" / "bench-20261207T0935Z-amd-epyc.json"


def _full_run() -> dict:
    return json.loads(FULL_RUN.read_text())


def _result(data: dict, case: str, runner: str) -> dict:
    (result,) = [r for r in data["results"] if r["case"] == case and r["runner"] == runner]
    return result


def _case_rows(text: str, case: str) -> dict:
    """The rows of a case's own table in a report, by runner name."""
    section = text.split(f"### `{case}`:")[1].split("###")[0]
    return {
        line.split(" | ")[0][2:]: line.split(" | ")
        for line in section.splitlines()
        if line.startswith("| keras-lmu")
    }


def test_report_numbers_are_those_of_the_json(tmp_path):
    """Medians, min-max, ratios (keras-lmu's over this library's), recurrence-equivalent
    GFLOP/s (3x forward for training) and peak RSS with its increase, recomputed here
    from the raw timings of a full run."""
    bench = _bench_module()
    data = _full_run()
    report = tmp_path / "report.md"
    bench.write_report(data, str(report), str(tmp_path / "long.png"), [str(FULL_RUN)])
    text = report.read_text()
    rows = _case_rows(text, "seq-ff-scan-full")
    own = _result(data, "seq-ff-scan-full", "keras-lmu3 jax")
    peer = _result(data, "seq-ff-scan-full", "keras-lmu 0.9.0 tensorflow")
    train, their_train = sorted(own["train_s"]), sorted(peer["train_s"])
    assert len(train) == 3  # the median is the middle one
    row = rows["keras-lmu3 jax"]
    assert row[1] == f"{1000 * train[1]:.0f} [{1000 * train[0]:.0f}-{1000 * train[2]:.0f}] n=3"
    assert row[2] == f"{their_train[1] / train[1]:.3g}" and float(row[2]) > 1
    increase = (own["peak_rss_kib"] - own["rss_after_build_kib"]) / 1024
    assert row[6] == f"{own['peak_rss_kib'] / 1024:.0f} (+{increase:.0f})"
    gflops = 3 * own["forward_flops"] / train[1] / 1e9
    assert row[7].split(" / ")[0] == f"{gflops:.3g}"
    # keras-lmu has no chunked scan: it ran its FFT, and its row says so.
    assert 'keras-lmu 0.9.0 tensorflow (conv_mode="fft")' in rows
    # Only the last step read: whatever conv_mode, one contraction over time.
    heading = text.split("### `seq-ff-fft`:")[1].split("|")[0]
    assert "Only the last step is read" in heading
    assert "Only the last step is read" not in text.split("### `seq-ff-full`:")[1].split("|")[0]


def test_target_verdicts_at_the_edges(tmp_path):
    """A ratio exactly at its target is met; one just under it is printed with the
    digits that show it (not rounded up to the target) and is not met; a keras-lmu that
    was too slow to time, or crashed, and a case this library failed, are said so."""
    bench = _bench_module()
    data = _full_run()
    peer_name = "keras-lmu 0.9.0 tensorflow"
    their = _result(data, "psmnist-rnn", peer_name)["train"]["median_s"]
    _result(data, "psmnist-rnn", "keras-lmu3 jax")["train"]["median_s"] = their
    for backend in ("tensorflow", "torch"):
        _result(data, "psmnist-rnn", f"keras-lmu3 {backend}")["train"]["median_s"] = their * 2
    their = _result(data, "seq-rnn", peer_name)["train"]["median_s"]
    for backend in ("jax", "tensorflow", "torch"):
        _result(data, "seq-rnn", f"keras-lmu3 {backend}")["train"]["median_s"] = their / 0.9996
    skipped = _result(data, "trainable-theta", peer_name)
    skipped.update(train=None, skipped=True, compile_train_s=130.4)
    crashed = _result(data, "seq-ff-fft", peer_name)
    crashed.update(train=None, error="exit status -6")
    del crashed["peak_rss_kib"]
    for backend in ("jax", "tensorflow", "torch"):
        _result(data, "seq-ff-raw", f"keras-lmu3 {backend}").update(train=None, error="crashed")
    rows = {
        line.split(" |")[0]: line for line in bench.target_lines(data["results"]) if "`" in line
    }
    assert rows["| `psmnist-rnn` >= 1x keras-lmu"].endswith("| 1x | met |")
    assert rows["| `seq-rnn` >= 1x keras-lmu"].endswith("| 0.9996x | **not met** |")
    assert rows["| `trainable-theta` >= 100x keras-lmu"].endswith(
        "| keras-lmu not timed (first step 130 s) |"
    )
    assert rows["| `seq-ff-fft` >= 5x keras-lmu"].endswith("| keras-lmu failed |")
    assert rows["| `seq-ff-fft` peak RSS increase <= 0.5 of keras-lmu's"].endswith(
        "| keras-lmu failed |"
    )
    assert rows["| `seq-ff-raw` >= 5x keras-lmu"].endswith("| **not met** (no timed step here) |")


def test_merged_report_adds_up_the_runs(tmp_path):
    """Merging a run with a re-run of one case: wall and CPU time are both summed, each
    run is named with its commit, and a run stopped before its end marks the whole as
    partial."""
    bench = _bench_module()
    first, rerun = _full_run(), _full_run()
    rerun["meta"].update(git_commit="0123456789abcdef", total_seconds=60, children_cpu_seconds=90)
    rerun["results"] = [r for r in rerun["results"] if r["case"] == "seq-rnn"]
    paths = [tmp_path / "first.json", tmp_path / "rerun.json"]
    for path, data in zip(paths, (first, rerun), strict=True):
        path.write_text(json.dumps(data))
    merged = bench.merge([str(path) for path in paths])
    assert merged["meta"]["total_seconds"] == first["meta"]["total_seconds"] + 60
    assert merged["meta"]["children_cpu_seconds"] == first["meta"]["children_cpu_seconds"] + 90
    report = tmp_path / "report.md"
    bench.write_report(merged, str(report), str(tmp_path / "long.png"), [str(p) for p in paths])
    text = report.read_text()
    minutes = (first["meta"]["total_seconds"] + 60) / 60
    cpu_minutes = (first["meta"]["children_cpu_seconds"] + 90) / 60
    assert f"total {minutes:.1f} min, {cpu_minutes:.1f} min of CPU time" in text
    assert "commit 0123456789abcdef" in text and f"commit {first['meta']['git_commit']}" in text
    del rerun["meta"]["total_seconds"]
    paths[1].write_text(json.dumps(rerun))
    merged = bench.merge([str(path) for path in paths])
    bench.write_report(merged, str(report), str(tmp_path / "long.png"), [str(p) for p in paths])
    assert "stopped before the end: partial results" in report.read_text()


def test_report_from_needs_the_files_to_write():
    bench = _bench_module()
    with pytest.raises(SystemExit):
        bench.parse_args(["--report-from", str(FULL_RUN)])
    args = bench.parse_args(["--report-from", str(FULL_RUN), "--report", "r.md", "--plot", "p.png"])
    assert args.report_from == [str(FULL_RUN)]
