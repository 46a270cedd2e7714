"""Whole-model throughput: `--model xception` (xsep's Xception against timm's `legacy_xception`,
eager and under torch.compile, inference and training step), `--model inception_v3` (the paper's
Table 3: training steps per second of Xception against torchvision's Inception V3 at one batch
size; the paper measured 28 vs 31 steps/s on 60 K80s and expected faster depthwise kernels to flip
that), and `--model torchvision:NAME` / `--model timm:NAME` (an existing model against the same
model rewritten by xsep, as a user would: `xsep.convert` for the training step,
`xsep.fuse_for_inference` (which converts first) for inference, against the model as it comes)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from xsep._optional import require as require_package
from xsep.bench.timing import summarize, time_calls

IMAGE_SIZE = 299


def _xsep_xception(backend: str | None) -> nn.Module:
    from xsep.models import xception

    return xception(backend=backend)


def _fused_for_inference(model: nn.Module, backend: str | None) -> nn.Module:
    import xsep

    return xsep.fuse_for_inference(model.eval(), backend)


def _batch_norm_folded(model: nn.Module) -> nn.Module:
    """`model` with every conv -> BN pair folded by torch.fx's own pass (no xsep layer): the baseline
    an inference user of the original would build."""
    from torch.fx.experimental.optimization import fuse

    return fuse(model.eval())


def _timm_xception() -> nn.Module:
    import timm

    return timm.create_model("legacy_xception", pretrained=False)


def _inception_v3() -> nn.Module:
    import torchvision

    return torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)


def _loss(out, target: torch.Tensor) -> torch.Tensor:
    if isinstance(out, tuple):  # Inception V3 in training mode: (logits, aux_logits), aux weighted 0.4
        return nn.functional.cross_entropy(out[0], target) + 0.4 * nn.functional.cross_entropy(out[1], target)
    return nn.functional.cross_entropy(out, target)


def _step_fn(model: nn.Module, mode: str, batch: torch.Tensor, target: torch.Tensor,
             amp_dtype) -> Callable[[int], None]:
    device_type = batch.device.type
    if mode == "inference":
        model.eval()

        def infer(i: int) -> None:
            with torch.no_grad(), torch.autocast(device_type, amp_dtype, enabled=amp_dtype is not None):
                model(batch)
        return infer
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, amp_dtype, enabled=amp_dtype is not None):
            loss = _loss(model(batch), target)
        loss.backward()
        optimizer.step()
    return train_step


def _converted_factory(which: str) -> Callable[[], nn.Module]:
    """The factory of `--model torchvision:NAME` / `timm:NAME` (random weights, 1000 classes)."""
    source, name = which.split(":", 1)
    if source == "torchvision":
        import torchvision

        return lambda: torchvision.models.get_model(name, weights=None)
    import timm

    return lambda: timm.create_model(name, pretrained=False)


def _converted(model: nn.Module, mode: str, backend: str | None) -> nn.Module:
    """`model` as xsep rewrites it for `mode` (a copy; the original is the baseline)."""
    import xsep

    model = copy.deepcopy(model)
    if mode == "inference":
        return xsep.fuse_for_inference(model.eval(), backend)  # converts, folds the BNs, converts again
    return xsep.convert(model, backend)


XSEP = "xsep xception"
CONVERTED_SOURCES = {"torchvision": "torchvision", "timm": "timm"}  # --model SOURCE:NAME -> the PyPI package
CONVERTED_IMAGE_SIZE = 224
# --model: (the baseline's row name, factory, modes, the package it comes from: (import name, PyPI name))
BASELINES = {
    "xception": ("timm legacy_xception", _timm_xception, ("inference", "training"), ("timm", "timm")),
    "inception_v3": ("torchvision inception_v3", _inception_v3, ("training",), ("torchvision", "torchvision")),
}


def _is_converted(which: str) -> bool:
    return which.split(":", 1)[0] in CONVERTED_SOURCES and ":" in which


def require(which: str) -> None:
    """Checks `--model which` before anything is timed: a ValueError for an unknown model,
    xsep._optional.MissingDependency when its baseline's package is not installed."""
    if _is_converted(which):
        source, name = which.split(":", 1)
        require_package(source, package=CONVERTED_SOURCES[source], extra="bench", what=f"xsep bench --model {which}")
        if source == "torchvision":
            import torchvision

            known = torchvision.models.list_models()
        else:
            import timm

            known = timm.list_models()
        if name not in known:
            raise ValueError(f"--model {which}: {source} has no model {name!r}")
        return
    if which not in BASELINES:
        raise ValueError(f"--model must be one of {', '.join(map(repr, BASELINES))}, or torchvision:NAME or "
                         f"timm:NAME (a model to convert), got {which!r}")
    module, package = BASELINES[which][3]
    require_package(module, package=package, extra="bench", what=f"xsep bench --model {which}")


def bench_models(which: str, *, device: torch.device, batch: int, dtype: torch.dtype, layout: str,
                 compile: bool, repeats: int, warmup: int, statistic: str, backend: str | None = None,
                 progress: Callable[[str], None] | None = None) -> list[dict]:
    """Rows of {model, mode, compiled, seconds_per_step, images_per_s, speedup, baseline, ...}, one per
    model and setting. The xsep Xception's row (its layers on `backend`, default: the automatic choice)
    holds `speedup` = the baseline's time per step / xsep's (> 1: xsep faster) and the baseline's name;
    the baseline's row (timm's Xception or Inception V3) holds None there."""
    require(which)
    if _is_converted(which):  # the same weights: xsep's model is made from the baseline's
        baseline, factory, modes = which.replace(":", " "), _converted_factory(which), ("inference", "training")
        xsep_name, size = f"xsep {which.split(':', 1)[1]} (converted)", CONVERTED_IMAGE_SIZE

        def contenders(mode):
            torch.manual_seed(0)
            original = factory().to(device)
            return {xsep_name: lambda: _converted(original, mode, backend), baseline: lambda: original}
    else:
        baseline, factory, modes, _ = BASELINES[which]
        size = IMAGE_SIZE

        def contenders(mode):
            if mode == "inference":  # xsep's model as served (BNs folded, fused), against timm's as it is and
                # with its BNs folded
                return {XSEP: lambda: _fused_for_inference(_xsep_xception(backend), backend), baseline: factory,
                        f"{baseline} (BN folded)": lambda: _batch_norm_folded(factory())}
            return {XSEP: lambda: _xsep_xception(backend), baseline: factory}
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    # The models keep float32 weights and run under autocast at `dtype`, as users train them.
    amp_dtype = None if dtype == torch.float32 else dtype
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=fmt)
    target = torch.randint(0, 1000, (batch,), device=device)
    rows = []
    for compiled in ((False, True) if compile else (False,)):
        for mode in modes:
            fns = {}
            for name, make in contenders(mode).items():
                if progress:
                    progress(f"{name} {mode}{' compiled' if compiled else ''}")
                torch.manual_seed(0)
                model = make().to(device).to(memory_format=fmt)
                if compiled:
                    model = torch.compile(model)
                fns[name] = _step_fn(model, mode, x, target, amp_dtype)
            samples = time_calls(fns, device, repeats=repeats, warmup=warmup)
            seconds = {n: summarize(v, statistic) for n, v in samples.items()}
            for name, s in seconds.items():
                is_xsep = name != baseline
                rows.append({"model": name, "mode": mode, "compiled": compiled, "batch": batch,
                             "xsep_backend": backend or "automatic",
                             "dtype": str(dtype).removeprefix("torch."), "layout": layout,
                             "seconds_per_step": s, "steps_per_s": 1 / s, "images_per_s": batch / s,
                             "samples": len(samples[name]), "seconds_samples": samples[name],
                             "speedup": seconds[baseline] / s if is_xsep else None,
                             "baseline": baseline if is_xsep else None})
    return rows


def table(rows: list[dict]) -> str:
    """The printed table; `speedup` (baseline time / xsep time) on each xsep row."""
    head = (f"{'model':<26} {'mode':<10} {'compiled':<9} {'ms/step':>10} {'steps/s':>8} {'img/s':>9} "
            f"{'speedup':>8}  vs")
    lines = [head, "-" * len(head)]
    for r in rows:
        vs = f"{r['speedup']:7.2f}x  {r['baseline']}" if r["speedup"] is not None else f"{'-':>8}"
        lines.append(f"{r['model']:<26} {r['mode']:<10} {str(r['compiled']):<9} {1e3 * r['seconds_per_step']:10.1f} "
                     f"{r['steps_per_s']:8.2f} {r['images_per_s']:9.1f} {vs}")
    return "\n".join(lines)
