"""Each backend against the float64 reference before anything is timed, with the tests' tolerance
rule (`xsep.testing`): float64 and float32 within a fixed relative error; bfloat16 and float16 at
most twice PyTorch's own error at that dtype (the `torch` backend's, measured on the same inputs,
the worst over the output and gradients) plus an eighth of the dtype's epsilon. A result with a NaN
or an infinity has the error `inf`, so it is reported as the worst and never passes."""

from __future__ import annotations

import torch

from xsep.bench import cases
from xsep.bench.shapes import SeparableLayer
from xsep.testing import rel_error, tolerance


def _outputs(op: str, mode: str, backend: str, layer: SeparableLayer, inputs: cases.Inputs) -> dict[str, torch.Tensor]:
    if mode == "forward":
        with torch.no_grad():
            return {"output": cases.run(op, backend, layer, inputs)}
    params = cases.leaves(op, inputs)
    y = cases.run(op, backend, layer, inputs)
    grads = torch.autograd.grad(y, params, inputs.grad_output)
    weights = {"depthwise": ["depthwise_weight"], "pointwise": ["pointwise_weight"],
               "separable": ["depthwise_weight", "pointwise_weight"]}[op]
    names = ["grad_input"] + [f"grad_{n}" for n in weights]
    return {"output": y.detach(), **dict(zip(names, grads))}


def _cast(inputs: cases.Inputs, dtype: torch.dtype) -> cases.Inputs:
    def c(t):
        if t is None:
            return None
        fmt = torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
            and not t.is_contiguous() else torch.contiguous_format
        return t.detach().to(dtype).contiguous(memory_format=fmt).requires_grad_(t.requires_grad)
    return cases.Inputs(c(inputs.x), c(inputs.depthwise_weight), c(inputs.pointwise_weight), c(inputs.grad_output))


def verify(op: str, mode: str, layer: SeparableLayer, backends: list[str], *, batch: int, dtype: torch.dtype,
           layout: str, device: torch.device) -> dict[str, dict]:
    """{backend: {"error": worst relative error over the output and gradients, "worst": which one,
    "tolerance": ..., "ok": bool}} for each of `backends` (the `torch` baseline included)."""
    inputs = cases.make_inputs(op, layer, batch, dtype, layout, device, backward=mode != "forward")
    reference = _outputs(op, mode, "torch", layer, _cast(inputs, torch.float64))
    baseline = _outputs(op, mode, "torch", layer, inputs)
    torch_error = max(rel_error(baseline[k], reference[k]) for k in reference)
    tol = tolerance(dtype, torch_error)
    results = {}
    for backend in backends:
        got = baseline if backend == "torch" else _outputs(op, mode, backend, layer, inputs)
        errors = {k: rel_error(got[k], reference[k]) for k in reference}
        worst = max(errors, key=errors.get)
        results[backend] = {"error": errors[worst], "worst": worst, "tolerance": tol,
                            "ok": errors[worst] <= tol or backend == "torch"}
    return results
