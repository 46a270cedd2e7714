"""xsep.backends: how a backend is chosen (explicit > XSEP_BACKEND > automatic) and why one cannot run."""

from __future__ import annotations

import pytest
import torch
from helpers import dispatched_ops, native_available, require_native

import xsep.functional as XF
from xsep import _extension, backends
from xsep.bench import report


@pytest.fixture
def library_missing(monkeypatch):
    """As if the compiled library failed to load (e.g. no compiler on the machine)."""
    monkeypatch.setattr(_extension, "load", lambda jit=True: False)
    monkeypatch.setattr(_extension, "load_error", lambda: "RuntimeError: no C++ compiler (simulated)")


def test_names():
    # The three documented backends, in automatic-preference order.
    assert backends.BACKENDS == ("native", "triton", "torch")


@pytest.mark.usefixtures("no_backend_env")
def _automatic_on_this_cpu() -> str:
    """What the automatic choice gives the default op (fused separable, channels_last) on this CPU:
    native where the library loads and the committed results show it at least as fast here."""
    faster = backends.measured_faster_on_cpu("separable_conv2d", "channels_last")
    return "native" if native_available() and faster else "torch"


def test_automatic_is_native_on_cpu_when_the_library_loads():
    # With the library, CPU tensors get the compiled kernels where the committed results show them
    # at least as fast on this kind of CPU; without it, the reference.
    expected = _automatic_on_this_cpu()
    assert backends.select(None, "cpu") == expected
    assert backends.select(None, torch.device("cpu")) == expected


@pytest.mark.usefixtures("no_backend_env", "library_missing")
def test_automatic_falls_back_to_torch_without_the_library():
    # A machine without a compiler still works, on the reference; the native reason carries the
    # load error so `python -m xsep info` can show it.
    assert backends.select(None, "cpu") == "torch"
    reason = backends.unavailable_reason("native", "cpu")
    assert "could not be loaded" in reason and "no C++ compiler (simulated)" in reason


@pytest.mark.usefixtures("no_backend_env")
def test_automatic_on_a_device_without_kernels():
    # Meta tensors (shape inference): no native or Triton kernels there, so the reference.
    assert backends.select(None, "meta") == "torch"


def test_env_overrides_automatic(monkeypatch):
    # XSEP_BACKEND replaces the automatic choice...
    monkeypatch.setenv("XSEP_BACKEND", "torch")
    assert backends.select(None, "cpu") == "torch"


def test_explicit_overrides_env(monkeypatch):
    # ...and an explicit backend= wins over XSEP_BACKEND, which is not even consulted (an
    # unavailable or misspelt value there does not matter).
    monkeypatch.setenv("XSEP_BACKEND", "triton")
    assert backends.select("torch", "cpu") == "torch"
    monkeypatch.setenv("XSEP_BACKEND", "no-such-backend")
    assert backends.select("torch", "cpu") == "torch"


def test_empty_env_means_automatic(monkeypatch):
    # XSEP_BACKEND= (set but empty, as CI templates often leave it) is the same as unset.
    monkeypatch.setenv("XSEP_BACKEND", "")
    assert backends.select(None, "cpu") == _automatic_on_this_cpu()


def test_env_native_selects_native(monkeypatch):
    # XSEP_BACKEND=native runs the compiled ops (seen at the dispatcher).
    require_native()
    monkeypatch.setenv("XSEP_BACKEND", "native")
    x, w = torch.randn(1, 3, 5, 5), torch.randn(3, 1, 3, 3)
    assert "xsep::depthwise_conv2d" in dispatched_ops(XF.depthwise_conv2d, x, w)
    monkeypatch.setenv("XSEP_BACKEND", "torch")
    ran = dispatched_ops(XF.depthwise_conv2d, x, w)
    assert "aten::convolution" in ran and not any(op.startswith("xsep::") for op in ran)


@pytest.mark.usefixtures("library_missing")
def test_explicit_native_without_library_raises_with_the_load_error():
    # Asking for native when it cannot load is an error naming the load failure, never a silent
    # fallback to the (slower) reference.
    with pytest.raises(RuntimeError, match=r"xsep backend 'native' \(backend\) cannot run on cpu: the compiled "
                                           r"library could not be loaded \(RuntimeError: no C\+\+ compiler"):
        backends.select("native", "cpu")


@pytest.mark.parametrize("name", backends.BACKENDS)
@pytest.mark.parametrize("device", ["cpu", "meta", "cuda"])
def test_reasons_are_none_or_sentences(name, device):
    # unavailable_reason is None (available) or a non-empty string, for every backend and device,
    # including CUDA on a machine without one; it never raises.
    reason = backends.unavailable_reason(name, device)
    assert reason is None or (isinstance(reason, str) and reason.strip())


def test_known_availability_on_cpu():
    # The reference runs everywhere; Triton has no CPU kernels; native runs on CPU exactly when
    # the library loads.
    assert backends.unavailable_reason("torch", "cpu") is None
    assert backends.unavailable_reason("triton", "cpu") is not None
    assert (backends.unavailable_reason("native", "cpu") is None) == native_available()


def test_unknown_name():
    # check_name / unavailable_reason reject unknown names with the list of known ones.
    with pytest.raises(ValueError, match="unknown backend 'cudnn'; expected one of native, triton, torch"):
        backends.unavailable_reason("cudnn", "cpu")


def test_cuda_auto_choice_skips_backends_not_yet_verified_on_a_gpu(monkeypatch, no_backend_env):
    # Even where the native and Triton kernels could run CUDA tensors, the automatic choice keeps
    # cuDNN until the GPU check has verified them; asking by name still gets them.
    monkeypatch.setitem(backends._REASONS, "native", lambda device_type, op: None)
    monkeypatch.setitem(backends._REASONS, "triton", lambda device_type, op: None)
    assert backends.NOT_YET_VERIFIED_ON_GPU == {"native", "triton"}
    assert backends.select(None, "cuda") == "torch"
    assert backends.select("triton", "cuda") == "triton"
    monkeypatch.setattr(backends, "NOT_YET_VERIFIED_ON_GPU", frozenset({"native"}))
    assert backends.select(None, "cuda", "depthwise_conv2d") == "triton"


def test_availability_is_per_op(monkeypatch):
    monkeypatch.setitem(backends._REASONS, "native",
                        lambda device_type, op: None if op == "depthwise_conv2d" else f"no {op}")
    assert backends.unavailable_reason("native", "cuda", "depthwise_conv2d") is None
    assert backends.unavailable_reason("native", "cuda") == "no separable_conv2d"
    with pytest.raises(ValueError, match="unknown op 'conv2d'"):
        backends.unavailable_reason("native", "cuda", "conv2d")


# --------------------------------------------------------------------------------------------------
# CPU: the automatic choice follows the committed measurements (xsep/_measured.py)

MEASURED = {
    "Fast CPU": {"default": {("separable_conv2d", "channels_last"): (1.2, 1.1), ("separable_conv2d", "nchw"): (1.1, 0.9)}},
    "Slow CPU": {"default": {("separable_conv2d", "channels_last"): (0.8, 1.3)}},
}


@pytest.mark.parametrize("cpu, op, layout, faster", [
    ("Fast CPU", "separable_conv2d", "channels_last", True),   # both modes >= 1
    ("Fast CPU", "separable_conv2d", "nchw", False),           # forward+backward slower
    ("Fast CPU", "depthwise_conv2d", "channels_last", False),  # never measured: not shown faster
    ("Slow CPU", "separable_conv2d", "channels_last", False),  # forward slower
    ("Unmeasured CPU", "separable_conv2d", "channels_last", False),  # another CPU: the worst of all
    ("Unmeasured CPU", "separable_conv2d", "nchw", False),
])
def test_measured_faster_on_cpu(monkeypatch, cpu, op, layout, faster):
    monkeypatch.setattr(backends._measured, "CPU_SPEEDUPS", MEASURED)
    assert backends.measured_faster_on_cpu(op, layout, cpu, "default") is faster


@pytest.mark.parametrize("allocator, faster", [
    ("default", True),   # the results of the process's own setting decide
    ("retain", False),
    ("custom", False),   # a setting never measured on that CPU: the worst of its settings
])
def test_measured_faster_on_cpu_reads_the_allocator_setting(monkeypatch, allocator, faster):
    # How much of a CPU op's time goes to page faults depends on the host allocator (bench
    # --allocator): the results measured with the process's setting decide.
    measured = {"Some CPU": {"default": {("separable_conv2d", "nchw"): (1.3, 1.2)},
                             "retain": {("separable_conv2d", "nchw"): (0.9, 1.0)}}}
    monkeypatch.setattr(backends._measured, "CPU_SPEEDUPS", measured)
    assert backends.measured_faster_on_cpu("separable_conv2d", "nchw", "Some CPU", allocator) is faster


def test_allocator_setting_is_the_bench_s():
    # The setting the automatic choice looks up is the one the bench records for this process.
    from xsep.bench.timing import allocator

    assert backends.allocator_setting() == allocator()["setting"]


def test_automatic_choice_on_cpu_never_picks_a_measured_slowdown(monkeypatch, no_backend_env):
    # Where the committed results show native slower than torch for an op and layout, CPU tensors
    # get torch; where they show it faster, native (when the library loads). Asking by name still works.
    monkeypatch.setattr(backends, "_cpu_names", lambda: ("Fast CPU (avx512)", "Fast CPU"))  # ISA never measured
    monkeypatch.setattr(backends._measured, "CPU_SPEEDUPS", MEASURED)
    assert backends.select(None, "cpu", "separable_conv2d", "nchw") == "torch"
    assert backends.select(None, "cpu", "depthwise_conv2d", "channels_last") == "torch"
    assert backends.select(None, "cpu", "separable_conv2d", "channels_last") == (
        "native" if native_available() else "torch")
    if native_available():
        assert backends.select("native", "cpu", "separable_conv2d", "nchw") == "native"


def test_automatic_choice_on_cpu_prefers_the_same_instruction_set(monkeypatch, no_backend_env):
    # One model name covers CPUs with and without AVX-512 ("AMD EPYC"): results recorded with the
    # instruction set of xsep's kernels decide for CPUs that use the same one; results recorded
    # without it (older files) decide only where the CPU's own kind was never measured.
    measured = {"Same CPU (avx512)": {"default": {("separable_conv2d", "channels_last"): (1.2, 1.1)}},
                "Same CPU": {"default": {("separable_conv2d", "channels_last"): (0.9, 0.9)}}}
    monkeypatch.setattr(backends._measured, "CPU_SPEEDUPS", measured)
    native = "native" if native_available() else "torch"
    monkeypatch.setattr(backends, "_cpu_names", lambda: ("Same CPU (avx512)", "Same CPU"))
    assert backends.select(None, "cpu", "separable_conv2d", "channels_last") == native
    monkeypatch.setattr(backends, "_cpu_names", lambda: ("Same CPU (avx2)", "Same CPU"))
    assert backends.select(None, "cpu", "separable_conv2d", "channels_last") == "torch"


def test_automatic_choice_on_cpu_prefers_the_same_generation(monkeypatch, no_backend_env):
    # One model name and instruction set covers generations (AMD EPYC Zen 4 and Zen 5): results
    # recorded with the CPU's family and model numbers decide for that family and model; results
    # recorded without them (older files) decide only where this CPU's own was never measured.
    measured = {"Same CPU (avx512, family 26 model 2)": {"default": {("separable_conv2d", "nchw"): (1.2, 1.1)}},
                "Same CPU (avx512)": {"default": {("separable_conv2d", "nchw"): (0.9, 0.9)}}}
    monkeypatch.setattr(backends._measured, "CPU_SPEEDUPS", measured)
    native = "native" if native_available() else "torch"
    zen5 = ("Same CPU (avx512, family 26 model 2)", "Same CPU (avx512)", "Same CPU")
    monkeypatch.setattr(backends, "_cpu_names", lambda: zen5)
    assert backends.measured_cpu_kind() == zen5[0]
    assert backends.select(None, "cpu", "separable_conv2d", "nchw") == native
    zen4 = ("Same CPU (avx512, family 25 model 17)", "Same CPU (avx512)", "Same CPU")
    monkeypatch.setattr(backends, "_cpu_names", lambda: zen4)
    assert backends.measured_cpu_kind() == "Same CPU (avx512)"
    assert backends.select(None, "cpu", "separable_conv2d", "nchw") == "torch"


def test_cpu_names_run_from_the_most_specific():
    names = backends._cpu_names()
    assert names[-1] == report.device_name(torch.device("cpu"))
    assert all(names[-1] in name for name in names) and len(set(names)) == len(names)


def test_functional_passes_the_input_layout(monkeypatch, no_backend_env):
    # The layout the choice is made for is the input's memory format.
    seen = []
    real = backends.select
    monkeypatch.setattr(backends, "select", lambda *a: seen.append(a[3]) or real(*a))
    x, w = torch.randn(1, 3, 6, 6), torch.randn(3, 1, 3, 3)
    XF.depthwise_conv2d(x, w)
    XF.depthwise_conv2d(x.to(memory_format=torch.channels_last), w)
    assert seen == ["nchw", "channels_last"]


def test_functional_makes_the_automatic_choice_once(monkeypatch, no_backend_env):
    # The automatic choice is remembered per device, op and layout (making it costs more than a
    # small layer's kernel); a backend named by the argument or by XSEP_BACKEND is checked each call.
    seen = []
    real = backends.select
    monkeypatch.setattr(backends, "select", lambda *a: seen.append(a[0]) or real(*a))
    x, w = torch.randn(1, 3, 6, 6), torch.randn(3, 1, 3, 3)
    for _ in range(3):
        XF.depthwise_conv2d(x, w)
    XF.depthwise_conv2d(x.to(memory_format=torch.channels_last), w)
    XF.pointwise_conv2d(x, torch.randn(4, 3, 1, 1))
    assert seen == [None, None, None]
    XF.depthwise_conv2d(x, w, backend="torch")
    XF.depthwise_conv2d(x, w, backend="torch")
    monkeypatch.setenv("XSEP_BACKEND", "torch")
    XF.depthwise_conv2d(x, w)
    assert seen == [None, None, None, "torch", "torch", None]
    monkeypatch.setenv("XSEP_BACKEND", "no-such-backend")
    with pytest.raises(ValueError, match="unknown XSEP_BACKEND 'no-such-backend'"):
        XF.depthwise_conv2d(x, w)
