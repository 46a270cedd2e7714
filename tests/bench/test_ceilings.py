"""The bench's ceilings: the matmul ceiling is the best GEMM measured (torch.mm or oneDNN's 1x1
convolution), the fresh-memory cost is measured, and the allocator setting is recorded."""

import os
import subprocess
import sys

import pytest
import torch

from xsep.bench import ceilings, timing

CPU = torch.device("cpu")


def _fake_timer(seconds):
    """time_calls returning fixed samples per name (only for the names asked)."""
    def time_calls(fns, device, **kwargs):
        return {name: [seconds[name]] for name in fns}
    return time_calls


def test_the_two_gemms_compute_the_same_product():
    fns = ceilings.gemm_callables(CPU, torch.float64, 24)
    mm, conv = fns["mm"](0), fns["conv1x1"](0)
    assert conv.shape == (1, 24, 1, 24) and conv.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv.permute(0, 2, 3, 1).reshape(24, 24), mm)


@pytest.mark.parametrize("mm_s, conv_s, best", [(2.0, 1.0, "conv1x1"), (1.0, 2.0, "mm")])
def test_matmul_ceiling_is_the_faster_of_mm_and_conv1x1(monkeypatch, mm_s, conv_s, best):
    monkeypatch.setattr(ceilings, "time_calls", _fake_timer({"mm": mm_s, "conv1x1": conv_s}))
    rates = ceilings.matmul_rates(CPU, torch.float32, n=8, repeats=1)
    assert rates == {"mm": pytest.approx(2 * 8**3 / mm_s), "conv1x1": pytest.approx(2 * 8**3 / conv_s)}
    labels = ceilings.gemm_labels(CPU)
    c = ceilings.matmul_ceiling(rates, labels)
    assert c["matmul_flops_per_s"] == max(rates.values()) == rates[best]
    assert c["matmul_source"] == labels[best]
    assert c["matmul_candidates"] == {labels["mm"]: rates["mm"], labels["conv1x1"]: rates["conv1x1"]}
    assert ceilings.matmul_rate(CPU, torch.float32, n=8, repeats=1) == pytest.approx(rates[best])


def test_a_gemm_that_cannot_run_is_recorded_as_none(monkeypatch):
    real = ceilings.gemm_callables

    def broken_conv(device, dtype, n):
        fns = real(device, dtype, n)
        fns["conv1x1"] = lambda i: (_ for _ in ()).throw(RuntimeError("unsupported dtype"))
        return fns

    monkeypatch.setattr(ceilings, "gemm_callables", broken_conv)
    rates = ceilings.matmul_rates(CPU, torch.float32, n=16, repeats=1)
    assert rates["conv1x1"] is None and rates["mm"] > 0
    c = ceilings.matmul_ceiling(rates, ceilings.gemm_labels(CPU))
    assert c["matmul_flops_per_s"] == rates["mm"] and c["matmul_source"].startswith("torch.mm")
    with pytest.raises(RuntimeError, match="no GEMM"):
        ceilings.matmul_ceiling({"mm": None, "conv1x1": None}, ceilings.gemm_labels(CPU))


def test_gemm_labels_name_the_libraries():
    labels = ceilings.gemm_labels(CPU)
    assert labels["mm"].startswith("torch.mm (") and labels["conv1x1"].startswith("1x1 conv2d (")
    if torch.backends.mkldnn.is_available():
        assert labels["conv1x1"] == "1x1 conv2d (oneDNN)"


@pytest.mark.parametrize("fresh_s, mapped_s, cost", [(3.0, 1.0, 2.0), (1.0, 1.5, 0.0)])
def test_fresh_memory_cost_is_fresh_minus_mapped(monkeypatch, fresh_s, mapped_s, cost):
    monkeypatch.setattr(ceilings, "time_calls", _fake_timer({"fresh": fresh_s, "mapped": mapped_s}))
    f = ceilings.fresh_memory(CPU, 4096, repeats=1)
    assert (f["bytes"], f["fresh_seconds"], f["mapped_seconds"]) == (4096, fresh_s, mapped_s)
    assert f["cost_seconds"] == cost


def test_fresh_memory_is_measured():
    f = ceilings.fresh_memory(CPU, 4 << 20, repeats=2)
    assert f["bytes"] == 4 << 20 and f["fresh_seconds"] > 0 and f["mapped_seconds"] > 0
    assert f["cost_seconds"] >= 0 and f["page_faults"] >= 0


def test_measure_records_both_rates_the_source_and_fresh_memory(monkeypatch):
    monkeypatch.setattr(ceilings, "copy_bandwidth", lambda device, **kw: 1e10)
    monkeypatch.setattr(ceilings, "matmul_rates", lambda device, dtype, **kw: {"mm": 1e11, "conv1x1": 3e11})
    monkeypatch.setattr(ceilings, "FRESH_BYTES", 1 << 20)
    c = ceilings.measure(CPU, torch.float32, quick=True)
    labels = ceilings.gemm_labels(CPU)
    assert c["matmul_flops_per_s"] == 3e11 and c["matmul_source"] == labels["conv1x1"]
    assert c["matmul_candidates"] == {labels["mm"]: 1e11, labels["conv1x1"]: 3e11}
    assert c["copy_bytes_per_s"] == 1e10 and c["matmul_dtype"] == "float32"
    assert c["fresh_memory"]["bytes"] == 1 << 20 and c["fresh_memory"]["cost_seconds"] >= 0


@pytest.mark.parametrize("environ, setting", [
    ({"PATH": "/bin"}, "default"),
    (dict(timing.RETAIN, PATH="/bin"), "retain"),
    ({"MALLOC_MMAP_THRESHOLD_": "1000"}, "custom"),
    ({"THP_MEM_ALLOC_ENABLE": "1"}, "custom"),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "custom"),
    ({"LD_PRELOAD": "/usr/lib/libasan.so"}, "default"),  # not an allocator
])
def test_allocator_setting_is_detected(environ, setting):
    a = timing.allocator(environ)
    assert a["setting"] == setting
    assert a["env"] == {k: v for k, v in environ.items() if k in timing.MALLOC_VARS}
    assert a["preload"] == (["/usr/lib/libjemalloc.so.2"] if "jemalloc" in environ.get("LD_PRELOAD", "") else [])


def test_allocator_environ():
    environ = {"PATH": "/bin", "MALLOC_ARENA_MAX": "2", "THP_MEM_ALLOC_ENABLE": "1",
               "LD_PRELOAD": "/a/libtcmalloc.so /b/libother.so"}
    default = timing.allocator_environ("default", environ)
    assert default == {"PATH": "/bin", "LD_PRELOAD": "/b/libother.so"}
    assert timing.allocator(default)["setting"] == "default"
    retain = timing.allocator_environ("retain", environ)
    assert timing.allocator(retain)["setting"] == "retain" and retain["PATH"] == "/bin"
    with pytest.raises(ValueError, match="allocator setting"):
        timing.allocator_environ("jemalloc", environ)


def test_a_fresh_process_sees_the_retain_setting():
    env = timing.allocator_environ("retain", os.environ)
    code = "from xsep.bench.timing import allocator; print(allocator()['setting'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "retain"
