"""Export and compatibility of every mechanism: ONNX (+ onnxruntime), channels-last, tracing.

ONNX goes through the TorchScript-based exporter (``dynamo=False``, opset 17): it exports a
module in well under a second and every ONNX Runtime build runs its output. The default
``dynamo=True`` exporter takes several seconds per module, so it is checked only on the
mechanisms whose fast paths use special ops (``scaled_dot_product_attention``, the
criss-cross masks).

TorchScript: ``torch.jit.trace`` works for every mechanism and is tested.
``torch.jit.script`` is not supported (PyTorch 2.14 also marks it deprecated): the input
checks build f-string messages, which the TorchScript compiler does not accept.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch

import attn2d
from tests.helpers import activate

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

NAMES = [m.name for m in attn2d.available()]
SHAPE = (2, 16, 8, 8)
# The two special paths on export: SDPA with padded head widths (shared by nonlocal and
# danet) and the criss-cross masks.
DYNAMO_NAMES = ["pam", "criss-cross"]


def _module(name: str) -> torch.nn.Module:
    return activate(attn2d.create(name, SHAPE[1])).eval()


def _run_onnx(data: bytes, x: torch.Tensor) -> torch.Tensor:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # no constant-folding chatter
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_eager_with_a_dynamic_batch(name):
    module = _module(name)
    x, x3 = torch.randn(SHAPE), torch.randn(3, *SHAPE[1:])
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks
        torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    with torch.no_grad():
        for inp in (x, x3):
            torch.testing.assert_close(_run_onnx(buffer.getvalue(), inp), module(inp),
                                       atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", DYNAMO_NAMES)
def test_onnx_dynamo_export_matches_eager(name):
    module = _module(name)
    x = torch.randn(SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=18, verbose=False)
    with torch.no_grad():
        torch.testing.assert_close(_run_onnx(program.model_proto.SerializeToString(), x),
                                   module(x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("training", [False, True])
def test_channels_last_gives_the_same_output_and_keeps_the_layout(name, training):
    x = torch.randn(SHAPE)
    module = _module(name).train(training)
    expected = module(x)
    module = module.to(memory_format=torch.channels_last)
    y = module(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-4)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", NAMES)
def test_traced_module_matches_eager_at_another_batch_size(name):
    module = _module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (torch.randn(SHAPE),), check_trace=False)
    x = torch.randn(3, *SHAPE[1:])
    with torch.no_grad():
        torch.testing.assert_close(traced(x), module(x))
