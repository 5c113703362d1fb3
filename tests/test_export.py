"""``model.export``: every form of ``LMU`` served without Keras, as docs/export.md says.

Each format's models are exported once (a module fixture), then one fresh Python
process, in which ``keras`` and ``keras_lmu`` cannot be imported, loads them all
(``tf.saved_model.load`` or ONNX Runtime) and writes their outputs to an .npz file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import pytest

import keras_lmu
import keras_lmu.ops

BACKEND = keras.backend.backend()
STEPS, FEATURES = 32, 3
#: Batch size of the test input: not the 1 that PyTorch traces with, so a batch
#: dimension fixed by mistake shows.
BATCH = 3
FORMATS = ("tf_saved_model", "onnx")
PATHS = ("fft", "mixing", "raw", "scan", "last_step", "recurrent", "trainable_theta")

#: Why a (backend, format, path) does not export; docs/export.md has the full errors.
UNSUPPORTED = {
    ("torch", "tf_saved_model"): "Keras exports a SavedModel from PyTorch only through "
    "torch_xla, which is not installed",
    **{
        ("tensorflow", "onnx", path): "tf2onnx converts RFFT only when ComplexAbs reads it "
        "('Current implementation of RFFT or FFT only allows ComplexAbs as consumer'), and "
        "has no IRFFT: the model cannot be loaded ('No Op registered for RFFT')"
        for path in ("fft", "mixing")
    },
    **{
        ("jax", "onnx", path): "jax2onnx: 'IRFFT requires complex64 or complex128 input'"
        for path in ("fft", "mixing")
    },
}
#: Exports that need a fixed batch size (``input_signature``); with a free one they fail.
FIXED_BATCH = {
    # jax2onnx: 'reshape with symbolic dimensions requires mapping to input axes'.
    ("jax", "onnx", "raw"),
    ("jax", "onnx", "scan"),
    ("jax", "onnx", "trainable_theta"),
    # The TorchScript exporter, used for a free batch size, has no 'aten::fft_rfft'; the
    # dynamo exporter, used for a fixed one, has.
    ("torch", "onnx", "fft"),
    ("torch", "onnx", "mixing"),
}

#: Run in the fresh process: loads every artifact listed in argv[1] and saves outputs.
LOADER = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, json, sys

    class _Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            raise ImportError(f"{spec.name} must not be needed to serve an export")

        def exec_module(self, module):
            pass

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("keras", "keras_lmu"):
                return importlib.machinery.ModuleSpec(name, _Refuse())
            return None

    sys.meta_path.insert(0, _Block())
    import numpy as np

    jobs = json.load(open(sys.argv[1]))
    outputs, errors = {}, {}
    for name, job in jobs.items():
        inputs = np.load(job["inputs"])
        try:
            if job["format"] == "onnx":
                import onnxruntime

                session = onnxruntime.InferenceSession(job["artifact"])
                feed = {session.get_inputs()[0].name: inputs}
                outputs[name] = session.run(None, feed)[0]
            else:
                import tensorflow as tf

                served = tf.saved_model.load(job["artifact"])
                outputs[name] = served.serve(tf.constant(inputs)).numpy()
        except Exception as error:
            errors[name] = f"{type(error).__name__}: {error}"
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("keras", "keras_lmu"))
    np.savez(sys.argv[2], **outputs)
    json.dump({"errors": errors, "keras_modules": loaded}, open(sys.argv[3], "w"))
    """
)


def unsupported_reason(export_format: str, path: str) -> str | None:
    """Why ``path`` does not export to ``export_format`` on this backend, or None."""
    return UNSUPPORTED.get(
        (BACKEND, export_format), UNSUPPORTED.get((BACKEND, export_format, path))
    )


def build_model(path: str) -> keras.Model:
    """A small float32 model whose ``LMU`` runs ``path``."""
    keras.utils.set_random_seed(0)
    common = {"memory_d": 2, "order": 8, "theta": 12.0, "dtype": "float32"}
    dense = keras.layers.Dense(5, dtype="float32")
    if path in ("fft", "raw", "scan"):
        lmu = keras_lmu.LMU(hidden_cell=dense, return_sequences=True, conv_mode=path, **common)
    elif path == "mixing":  # memory_to_memory: one response mixes the memories
        lmu = keras_lmu.LMU(
            hidden_cell=dense,
            memory_to_memory=True,
            return_sequences=True,
            conv_mode="fft",
            **common,
        )
    elif path == "last_step":
        lmu = keras_lmu.LMU(hidden_cell=dense, return_sequences=False, **common)
    elif path == "recurrent":
        lmu = keras_lmu.LMU(
            hidden_cell=keras.layers.SimpleRNNCell(5, dtype="float32"),
            hidden_to_memory=True,
            memory_to_memory=True,
            return_sequences=True,
            **common,
        )
    else:  # the scan (every backend's ONNX exporter lacks the FFT PyTorch's "auto" picks)
        lmu = keras_lmu.LMU(
            hidden_cell=dense,
            trainable_theta=True,
            return_sequences=True,
            conv_mode="scan",
            **common,
        )
    inputs = keras.Input((STEPS, FEATURES), dtype="float32")
    model = keras.Model(inputs, lmu(inputs))
    if path == "trainable_theta":  # a learned window, not the initial one
        memory = lmu._memory_layer
        memory.theta_inv.assign(keras.ops.convert_to_tensor(1 / 9.5, memory.theta_inv.dtype))
    expected_form = path != "recurrent"
    assert lmu.uses_parallel_form() is expected_form
    return model


def _export_required_modules(export_format: str):
    if export_format == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
        pytest.importorskip(
            {"tensorflow": "tf2onnx", "jax": "jax2onnx", "torch": "onnxscript"}[BACKEND]
        )
    else:
        pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Per format: {path: (keras outputs, served outputs or error message)}, loaded lazily."""
    cache = {}

    def serve(export_format: str):
        if export_format in cache:
            return cache[export_format]
        _export_required_modules(export_format)
        folder = tmp_path_factory.mktemp(f"export_{export_format}")
        rng = np.random.default_rng(1)
        jobs, expected, export_errors = {}, {}, {}
        for path in PATHS:
            if unsupported_reason(export_format, path):
                continue
            model = build_model(path)
            fixed = (BACKEND, export_format, path) in FIXED_BATCH
            inputs = rng.normal(size=(BATCH, STEPS, FEATURES)).astype("float32")
            np.save(folder / f"{path}_inputs.npy", inputs)
            artifact = folder / (f"{path}.onnx" if export_format == "onnx" else path)
            signature = None
            if fixed:
                signature = [keras.InputSpec(shape=(BATCH, STEPS, FEATURES), dtype="float32")]
            # The FFT in its smallest pieces (one order of one channel each), so that the
            # export holds the loop over channels and the blocks of orders.
            with (
                mock.patch.object(keras_lmu.ops, "FFT_PIECE_VALUES", 1),
                mock.patch.object(keras_lmu.ops, "FFT_TORCH_CPU_PIECE_VALUES", 1),
            ):
                expected[path] = keras.ops.convert_to_numpy(model(inputs, training=False))
                try:
                    model.export(
                        str(artifact),
                        format=export_format,
                        verbose=False,
                        input_signature=signature,
                    )
                except Exception as error:  # reported by the path's test
                    export_errors[path] = f"export failed: {type(error).__name__}: {error}"
                    continue
            jobs[path] = {
                "format": export_format,
                "artifact": str(artifact),
                "inputs": str(folder / f"{path}_inputs.npy"),
            }
        (folder / "jobs.json").write_text(json.dumps(jobs))
        (folder / "loader.py").write_text(LOADER)
        result = subprocess.run(
            [
                sys.executable,
                str(folder / "loader.py"),
                str(folder / "jobs.json"),
                str(folder / "outputs.npz"),
                str(folder / "report.json"),
            ],
            cwd=folder,
            env={**os.environ, "PYTHONPATH": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((folder / "report.json").read_text())
        assert report["keras_modules"] == [], "serving imported keras"
        outputs = dict(np.load(folder / "outputs.npz"))
        cache[export_format] = {
            path: (
                expected[path],
                outputs.get(path, report["errors"].get(path) or export_errors.get(path)),
            )
            for path in expected
        }
        return cache[export_format]

    return serve


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("export_format", FORMATS)
def test_export_serves_keras_outputs(served, export_format, path):
    reason = unsupported_reason(export_format, path)
    if reason:
        pytest.skip(f"{export_format} on {BACKEND}, {path}: {reason}")
    expected, outputs = served(export_format)[path]
    assert not isinstance(outputs, str), outputs
    assert outputs.shape == expected.shape
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5 * scale)


def test_docs_example_exports_and_serves(tmp_path, monkeypatch):
    """The example of docs/export.md runs on this backend (in a temporary folder) and
    serves the model's outputs."""
    _export_required_modules("onnx")
    if BACKEND != "torch":
        _export_required_modules("tf_saved_model")
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    example = text.split("## Example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__export_example__"}
    exec(compile(example, "docs/export.md", "exec"), namespace)
    expected = namespace["expected"]
    servings = [namespace["served_onnx"]]
    if BACKEND != "torch":
        servings.append(namespace["served"])
    for served_outputs in servings:
        np.testing.assert_allclose(served_outputs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(BACKEND == "torch", reason=UNSUPPORTED[("torch", "tf_saved_model")])
@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True},
        {"return_sequences": False},
        {"return_sequences": True, "hidden_to_memory": True},
    ],
    ids=["every_step", "last_step", "recurrent"],
)
def test_saved_model_for_sequences_of_any_length(options, tmp_path):
    """A model built for any length (``keras.Input((None, features))``) exports and
    serves every length. On JAX the export failed: the length is a symbolic size there
    ('Symbolic dimension ... used in a context that requires a constant')."""
    _export_required_modules("tf_saved_model")
    import tensorflow as tf

    inputs = keras.Input((None, FEATURES))
    lmu = keras_lmu.LMU(1, 4, 6.0, keras.layers.Dense(3), **options)
    model = keras.Model(inputs, lmu(inputs))
    rng = np.random.default_rng(0)
    sequences = [
        rng.uniform(-1, 1, (BATCH, steps, FEATURES)).astype("float32") for steps in (7, 11)
    ]
    expected = [keras.ops.convert_to_numpy(model(x)) for x in sequences]
    model.export(str(tmp_path / "model"), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "model"))
    for x, outputs in zip(sequences, expected, strict=True):
        served = reloaded.serve(tf.constant(x)).numpy()
        np.testing.assert_allclose(served, outputs, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's exporter traces the model")
@pytest.mark.parametrize("layer", ["LMU", "LMU step by step", "LMUFeedforward"])
def test_onnx_export_of_any_length_is_refused_on_torch(layer, tmp_path):
    """PyTorch's exporter traces a length left unknown at 1 step and records it: the
    ONNX model computed one step for any input (1.97 off at 5 steps), silently."""
    _export_required_modules("onnx")
    options = {"hidden_to_memory": True} if layer == "LMU step by step" else {}
    cls = keras_lmu.LMUFeedforward if layer == "LMUFeedforward" else keras_lmu.LMU
    inputs = keras.Input((None, FEATURES))
    model = keras.Model(inputs, cls(1, 4, 6.0, keras.layers.Dense(3), **options)(inputs))
    model(np.zeros((BATCH, 5, FEATURES), "float32"))  # (Keras exports called models only)
    with pytest.raises(ValueError, match="built for sequences of any length, which PyTorch"):
        model.export(str(tmp_path / "model.onnx"), format="onnx", verbose=False)
