"""The CPU peers: the engines a CPU user would run GoogLeNet with instead of this package.

ONNX Runtime (its CPU execution provider) and OpenVINO both run the calibrated torchvision
googlenet (the weights every benchmarked model carries) exported once per input shape with
``torch.onnx.export``.  Both get ``torch.get_num_threads()`` intra-op threads, so they use the
cores the PyTorch rows use.  OpenVINO's inference precision is set explicitly
(``INFERENCE_PRECISION_HINT``): its default on a CPU with avx512_bf16 or AMX is bf16, which would
put a bf16 number in an fp32 row.  torch.compile with freezing is in bench_throughput.py
(``tv_compile``).

``peer_runner`` raises ``BackendUnavailable`` (the case skips, with the reason) where a package
is missing or the CPU cannot run the asked precision.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from functools import lru_cache

import torch

from benchmarks.helpers.models import BackendUnavailable, base_torchvision
from benchmarks.helpers.settings import Settings

PEERS = ("onnxruntime", "openvino")
_INSTALL = "pip install -e .[bench]"
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise BackendUnavailable(f"{module} is not installed ({_INSTALL}): {exc}") from None


@lru_cache(maxsize=8)
def onnx_file(image_size: int, calib_batch: int, batch: int) -> tuple:
    """(path, exporter): torchvision's calibrated googlenet as ONNX, static input shape
    (batch, 3, image_size, image_size), fp32, in a temporary directory removed when the process
    exits.  The dynamo exporter (torch's default, needs onnxscript) is tried first, then the
    TorchScript one."""
    _require("onnx")
    model = base_torchvision(image_size, calib_batch).eval()
    x = torch.randn(batch, 3, image_size, image_size)
    folder = tempfile.mkdtemp(prefix="inception_fast_onnx_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, f"googlenet_b{batch}_{image_size}.onnx")
    errors = []
    for dynamo in (True, False):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if dynamo:
                    torch.onnx.export(model, (x,), path, dynamo=True, external_data=False)
                else:
                    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17)
            return path, "dynamo" if dynamo else "torchscript"
        except Exception as exc:  # the other exporter may still work: the reasons are kept
            errors.append(f"dynamo={dynamo}: {type(exc).__name__}: {str(exc)[:200]}")
    raise BackendUnavailable("torch.onnx.export failed: " + "; ".join(errors))


def peer_runner(name: str, s: Settings, dtype: str, x: torch.Tensor) -> tuple:
    """(fn, info): ``fn()`` runs one inference of the peer ``name`` on ``x`` (given to the engine
    as an NCHW fp32 array) and returns the logits as a numpy array; ``info`` goes to extra_info."""
    if s.device.type != "cpu":
        raise BackendUnavailable(f"{name} is a CPU peer; the benchmark device is {s.device}")
    threads = torch.get_num_threads()
    array = x.detach().to(torch.float32).contiguous().cpu().numpy()
    if name == "onnxruntime":
        ort = _require("onnxruntime")
        if dtype != "fp32":
            raise BackendUnavailable(f"onnxruntime runs the fp32 export here, not {dtype}")
        path, exporter = onnx_file(s.image_size, s.calib_batch, x.shape[0])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: array}
        info = dict(
            peer_version=ort.__version__,
            onnx_exporter=exporter,
            provider=session.get_providers()[0],
            intra_op_threads=threads,
            precision="fp32",
        )
        return (lambda: session.run(None, feed)[0]), info
    if name == "openvino":
        ov = _require("openvino")
        if dtype not in _OV_PRECISION:
            raise BackendUnavailable(f"openvino: no {dtype} inference precision on CPU here")
        core = ov.Core()
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if dtype == "bf16" and "BF16" not in caps:
            raise BackendUnavailable(f"openvino: this CPU lacks bf16 (capabilities: {', '.join(caps)})")
        path, exporter = onnx_file(s.image_size, s.calib_batch, x.shape[0])
        config = {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[dtype],
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        compiled = core.compile_model(core.read_model(path), "CPU", config)
        request = compiled.create_infer_request()
        output = compiled.output(0)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16"
        if precision != _OV_PRECISION[dtype]:
            raise BackendUnavailable(f"openvino compiled for {precision} when asked for {_OV_PRECISION[dtype]}")
        info = dict(
            peer_version=ov.__version__,
            onnx_exporter=exporter,
            inference_precision=precision,
            default_precision=core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(),
            inference_threads=int(compiled.get_property("INFERENCE_NUM_THREADS")),
            streams=int(compiled.get_property("NUM_STREAMS")),
            precision=dtype,
        )
        return (lambda: request.infer({0: array})[output]), info
    raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
