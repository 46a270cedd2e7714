"""Each op x backend x layer x mode, timed by pytest-benchmark, with the torch baseline's time on
the same inputs in extra_info. GPU timing: the timed callable ends with a synchronize, warm-up runs
outside the timed rounds, and the inputs rotate over enough copies to overflow L2 twice."""

from __future__ import annotations

import itertools

import pytest
import torch

from xsep import backends
from xsep.bench import cases
from xsep.bench.timing import rotation_count, summarize, synchronize, time_calls
from xsep.bench.work import work

OPS = ("depthwise", "pointwise", "separable")
MODES = ("forward", "backward", "forward+backward")


def _backward_setup(op, backend, layer, rotation, counter):
    """pedantic() setup for the backward mode: an untimed forward, returning what the timed
    backward needs."""
    def setup():
        inputs = rotation[next(counter) % len(rotation)]
        params = cases.leaves(op, inputs)
        for t in params:
            t.grad = None
        y = cases.run(op, backend, layer, inputs)
        synchronize(inputs.x.device)
        return (y, inputs.grad_output, params), {}
    return setup


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", ["native", "triton", "torch"])
@pytest.mark.parametrize("op", OPS)
def test_speed(benchmark, bench_config, op, backend, mode, layer):
    c = bench_config
    reason = backends.unavailable_reason(backend, c.device, f"{op}_conv2d")
    if reason is not None:
        pytest.skip(f"backend '{backend}' on {c.device}: {reason}")
    backward = mode != "forward"
    w = work(op, "forward" if mode == "forward" else "forward+backward", batch=c.batch,
             in_channels=layer.in_channels, out_channels=layer.out_channels, size=layer.size,
             kernel_size=layer.kernel_size, stride=layer.stride,
             element_size=torch.empty((), dtype=c.dtype).element_size())
    rotate = rotation_count(c.device, w.bytes)
    rotation = [cases.make_inputs(op, layer, c.batch, c.dtype, c.layout, c.device, backward) for _ in range(rotate)]
    counter = itertools.count()

    # The baseline on the same inputs, same timer (forward+backward for both backward modes: the
    # pedantic backward-only time has no same-timer twin).
    timer_mode = "forward" if mode == "forward" else "forward+backward"
    fns = {b: cases.callable_for(op, timer_mode, b, layer, rotation) for b in dict.fromkeys([backend, "torch"])}
    samples = time_calls(fns, c.device, repeats=3 if c.quick else 10, warmup=1, rotate=rotate)
    statistic = "median" if c.device.type == "cuda" else "min"

    if mode == "backward":
        def target(y, grad_output, params):
            torch.autograd.backward(y, grad_output, inputs=params)
            synchronize(c.device)
        setup = _backward_setup(op, backend, layer, rotation, counter)
        benchmark.pedantic(target, setup=setup, rounds=3 if c.quick else 20, warmup_rounds=1)
    else:
        step = cases.callable_for(op, mode, backend, layer, rotation)

        def target():
            step(next(counter) % rotate)
            synchronize(c.device)
        benchmark.pedantic(target, rounds=3 if c.quick else 20, warmup_rounds=1, iterations=1)

    benchmark.extra_info.update({
        "device": torch.cuda.get_device_name(c.device) if c.device.type == "cuda" else "cpu",
        "dtype": str(c.dtype).removeprefix("torch."), "layout": c.layout, "batch": c.batch,
        "op": op, "backend": backend, "mode": mode, "layer": layer.describe(),
        "flops": w.flops, "bytes": w.bytes, "rotation": rotate,
        "timer_mode": timer_mode, "timer_statistic": statistic,
        "timer_seconds": summarize(samples[backend], statistic),
        "baseline_seconds": summarize(samples["torch"], statistic),
    })
