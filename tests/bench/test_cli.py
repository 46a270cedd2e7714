"""`python -m xsep bench` on a tiny CPU case, end to end."""

import json
import sys

import pytest

from xsep.__main__ import main
from xsep.bench import cases, models, shapes
from xsep.bench.shapes import SeparableLayer

TINY = [SeparableLayer("a", 12, 8, 16), SeparableLayer("b", 6, 16, 16), SeparableLayer("c", 6, 16, 16),
        SeparableLayer("d", 4, 16, 32)]


@pytest.fixture
def tiny_layers(monkeypatch):
    monkeypatch.setattr(shapes, "xception_separable_layers", lambda: TINY)


def _only_file(folder):
    (device_dir,) = folder.iterdir()
    (path,) = device_dir.glob("*.json")
    return path


def test_bench_quick_verifies_times_and_writes(native, tiny_layers, tmp_path, capsys):
    status = main(["bench", "--device", "cpu", "--quick", "--batch", "2", "--repeats", "1",
                   "--backends", "native", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    path = _only_file(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "xsep-bench/1" and doc["device"]["type"] == "cpu"
    assert doc["device"]["copy_bytes_per_s"] > 0 and doc["device"]["matmul_flops_per_s"] > 0
    # the matmul ceiling: the best of torch.mm and oneDNN's 1x1 convolution, both recorded
    candidates = doc["device"]["matmul_candidates"]
    assert len(candidates) == 2 and doc["device"]["matmul_flops_per_s"] == max(candidates.values())
    assert candidates[doc["device"]["matmul_source"]] == doc["device"]["matmul_flops_per_s"]
    assert f"from {doc['device']['matmul_source']}" in out
    assert doc["device"]["fresh_memory"]["cost_seconds"] >= 0 and "fresh memory (64 MiB)" in out
    assert doc["settings"]["allocator"]["setting"] in ("default", "retain", "custom") and "allocator: " in out
    rows = doc["layers"]
    # 3 of the 4 distinct shapes (b and c are one), 3 ops x 2 modes x (native + torch)
    assert {(r["size"], r["in_channels"], r["out_channels"]) for r in rows} == {(12, 8, 16), (6, 16, 16), (4, 16, 32)}
    assert len(rows) == 3 * 3 * 2 * 2
    assert all(r["verified"] and r["seconds"] > 0 and r["speedup"] > 0 for r in rows)
    assert {r["count"] for r in rows if r["size"] == 6} == {2}
    assert all(r["output_bytes"] > 0 and r["fresh_memory_seconds"] >= 0 for r in rows)
    assert "floor ms" in out and "fresh ms" in out
    assert len(doc["summary"]) == 3 * 2 * 2
    assert path.with_suffix(".png").exists()
    assert "geometric mean" in out and "vs oneDNN" in out


def test_bench_fails_on_a_wrong_backend(native, tiny_layers, tmp_path, monkeypatch, capsys):
    real_run = cases.run
    monkeypatch.setattr(cases, "run", lambda op, b, layer, inputs: real_run(op, b, layer, inputs) * (1.01 if b == "native" else 1))
    status = main(["bench", "--device", "cpu", "--quick", "--batch", "1", "--repeats", "1", "--backends", "native",
                   "--ops", "pointwise", "--modes", "forward", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1 and "WRONG" in out
    rows = json.loads(_only_file(tmp_path).read_text())["layers"]
    assert all(r["seconds"] is None for r in rows if r["backend"] == "native")


@pytest.mark.parametrize("option, value", [("--ops", "separable,conv"), ("--batch", "0"), ("--repeats", "-1"),
                                           ("--verify-batch", "x"), ("--dtype", "int8"), ("--layout", "")])
def test_bad_arguments_name_the_option(capsys, option, value):
    with pytest.raises(SystemExit):
        main(["bench", option, value])
    assert option in capsys.readouterr().err


def test_model_throughput_rows(native, monkeypatch):
    # the whole-model comparison at a small image (the real run uses 299x299)
    pytest.importorskip("timm")
    monkeypatch.setattr(models, "IMAGE_SIZE", 71)
    import torch

    rows = models.bench_models("xception", device=torch.device("cpu"), batch=1, dtype=torch.float32,
                               layout="channels_last", compile=False, repeats=1, warmup=0, statistic="min")
    # inference: xsep's model after fuse_for_inference, timm's as it is and with its BNs folded (torch.fx)
    assert {(r["model"], r["mode"]) for r in rows} == {
        (m, mode) for m in ("xsep xception", "timm legacy_xception") for mode in ("inference", "training")} | {
        ("timm legacy_xception (BN folded)", "inference")}
    assert all(r["seconds_per_step"] > 0 for r in rows)
    folded = next(r for r in rows if r["model"] == "timm legacy_xception (BN folded)")
    assert folded["baseline"] == "timm legacy_xception" and folded["speedup"] > 0
    assert "timm legacy_xception" in models.table(rows)


def test_converted_model_rows(native, monkeypatch):
    # --model torchvision:NAME: the model as it comes against the same weights converted by xsep
    # (fuse_for_inference for inference: mobilenet_v2's 17 chains fused; convert for training).
    pytest.importorskip("torchvision")
    import torch

    import xsep

    made = []
    converted = models._converted
    monkeypatch.setattr(models, "CONVERTED_IMAGE_SIZE", 32)
    monkeypatch.setattr(models, "_converted", lambda m, mode, b: made.append(converted(m, mode, b)) or made[-1])
    rows = models.bench_models("torchvision:mobilenet_v2", device=torch.device("cpu"), batch=2,
                               dtype=torch.float32, layout="nchw", compile=False, repeats=1, warmup=0,
                               statistic="min")
    assert [(r["model"], r["mode"]) for r in rows] == [
        (m, mode) for mode in ("inference", "training")
        for m in ("xsep mobilenet_v2 (converted)", "torchvision mobilenet_v2")]
    assert all(r["seconds_per_step"] > 0 for r in rows)
    assert [r["baseline"] for r in rows[::2]] == ["torchvision mobilenet_v2"] * 2
    inference, training = made
    assert sum(isinstance(m, xsep.SeparableConv2d) for m in inference.modules()) == 17
    assert sum(isinstance(m, xsep.DepthwiseConv2d) for m in training.modules()) == 17
    with pytest.raises(ValueError, match="torchvision has no model 'no_such_net'"):
        models.require("torchvision:no_such_net")


def test_model_speedup_is_on_the_xsep_row(monkeypatch):
    # Tiny stand-ins for both models (no timm needed); the baseline is made slower on purpose.
    import time

    import torch
    from torch import nn

    from xsep.models import xception_tiny

    class SlowBaseline(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 1000)

        def forward(self, x):
            time.sleep(0.05)
            return self.fc(x.mean((2, 3)))

    monkeypatch.setattr(models, "IMAGE_SIZE", 32)
    monkeypatch.setattr(models, "_xsep_xception", lambda backend: xception_tiny(backend="torch"))
    monkeypatch.setitem(models.BASELINES, "xception",
                        ("slow baseline", SlowBaseline, ("inference",), ("torch", "torch")))
    rows = models.bench_models("xception", device=torch.device("cpu"), batch=1, dtype=torch.float32,
                               layout="contiguous", compile=False, repeats=2, warmup=0, statistic="min")
    xsep_row, base_row, folded_row = rows  # (the baseline with its BNs folded: none here)
    assert (xsep_row["model"], base_row["model"]) == ("xsep xception", "slow baseline")
    assert folded_row["model"] == "slow baseline (BN folded)" and folded_row["baseline"] == "slow baseline"
    assert xsep_row["speedup"] == pytest.approx(base_row["seconds_per_step"] / xsep_row["seconds_per_step"])
    assert xsep_row["speedup"] > 1 and xsep_row["baseline"] == "slow baseline"
    assert base_row["speedup"] is None and base_row["baseline"] is None
    xsep_line, base_line, _ = models.table(rows).splitlines()[2:]
    assert xsep_line.startswith("xsep xception") and f"{xsep_row['speedup']:.2f}x  slow baseline" in xsep_line
    assert base_line.startswith("slow baseline") and base_line.rstrip().endswith("-")


def test_bench_without_matplotlib_names_the_extra(native, tiny_layers, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not importable
    status = main(["bench", "--device", "cpu", "--quick", "--batch", "1", "--repeats", "1", "--backends", "native",
                   "--ops", "pointwise", "--modes", "forward", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0 and "(no chart: matplotlib is not installed; pip install 'xsep[bench]')" in out
    assert not list(tmp_path.glob("*/*.png"))


def test_allocator_option_reruns_the_bench_in_a_fresh_process(native, tiny_layers, tmp_path, monkeypatch, capsys):
    # The child process is played in this one: its environment becomes os.environ and it runs the
    # pickled arguments (glibc itself is exercised in test_ceilings' real subprocess).
    import os
    import pickle
    import subprocess

    from xsep.bench import cli, timing

    calls = []

    def fake_run(cmd, input, env):
        assert cmd[:2] == [sys.executable, "-c"]
        args = pickle.loads(input)
        calls.append((args.allocator, {k: env.get(k) for k in timing.RETAIN}))
        with monkeypatch.context() as m:
            m.setattr(os, "environ", env)
            return subprocess.CompletedProcess(cmd, cli.run(args))

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")  # neither setting: both runs re-execute
    status = main(["bench", "--device", "cpu", "--quick", "--batch", "1", "--repeats", "1", "--backends", "native",
                   "--ops", "pointwise", "--modes", "forward", "--allocator", "default,retain", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert calls == [(["default"], {k: None for k in timing.RETAIN}), (["retain"], timing.RETAIN)]
    assert "allocator 'default' in a fresh process" in out and "allocator: retain" in out
    paths = sorted(tmp_path.glob("*/*.json"), key=lambda p: (len(p.name), p.name))  # date.json, then date-2.json
    docs = [json.loads(p.read_text()) for p in paths]
    assert [d["settings"]["allocator"]["setting"] for d in docs] == ["default", "retain"]
    assert docs[1]["settings"]["allocator"]["env"] == timing.RETAIN


def test_allocator_option_matching_the_environment_runs_here(monkeypatch):
    from xsep.bench import cli, timing

    for k in timing.MALLOC_VARS + ("LD_PRELOAD",):
        monkeypatch.delenv(k, raising=False)
    args = type("Args", (), {"allocator": ["default"]})()
    assert not cli._needs_rerun(args)
    args.allocator = ["retain"]
    assert cli._needs_rerun(args)
    args.allocator_child = True  # a child never re-executes again
    assert not cli._needs_rerun(args)
