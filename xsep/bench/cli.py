"""`python -m xsep bench`: verify every available backend against the float64 reference, then time
depthwise, pointwise and fused separable convolution, forward and forward+backward, beside the
`torch` baseline (cuDNN with channels_last and cudnn.benchmark on GPUs, oneDNN on CPUs) on the
model's layer shapes, in one run on one device. Prints the table and the geometric means, writes
`<out>/<device>/<date>.json` and a PNG chart beside it. Exit status 1 when a backend gave a wrong
answer.

--allocator default|retain (or both, comma-separated) runs the whole bench again in a fresh Python
process whose environment has glibc's allocator settings removed (default) or its mmap and trim
thresholds raised (retain): glibc reads them only at process start. Each run writes its own results
file, which records the allocator setting it saw."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path

import torch

from xsep.bench.timing import ALLOCATOR_SETTINGS
from xsep.bench.work import MODES, OPS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
QUICK_LAYERS = 3


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}; got {text!r}")
        return items
    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="verify and time every backend against cuDNN/oneDNN on real layers",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when a GPU is visible, else cpu")
    p.add_argument("--dtype", type=_csv(list(DTYPES)), help="comma-separated; default bfloat16 on GPU, float32 on CPU")
    p.add_argument("--layout", type=_csv(["channels_last", "nchw"]), default=["channels_last"],
                   help="comma-separated (default channels_last)")
    p.add_argument("--batch", type=_positive, help="default 128 on GPU, 8 on CPU")
    p.add_argument("--backends", type=_csv(["native", "triton"]),
                   help="backends to compare with the torch baseline (default: every one available on the device); "
                        "with --model, the first one runs the xsep Xception's layers (default: the automatic choice)")
    p.add_argument("--ops", type=_csv(list(OPS)), default=list(OPS))
    p.add_argument("--modes", type=_csv(list(MODES)), default=list(MODES))
    p.add_argument("--model", metavar="{xception,inception_v3,torchvision:NAME,timm:NAME}",
                   help="whole-model throughput instead of layers: xsep's Xception vs timm legacy_xception, "
                        "or vs torchvision Inception V3 training steps (the paper's Table 3); or a torchvision/timm "
                        "model (e.g. torchvision:mobilenet_v2) against itself converted by xsep (xsep.convert for "
                        "training, fuse_for_inference for inference)")
    p.add_argument("--no-compile", action="store_true", help="--model: eager only (skip torch.compile)")
    p.add_argument("--layers", type=lambda t: [x for x in t.split(",") if x.strip()],
                   help="comma-separated SIZE:IN:OUT layer shapes to run (e.g. 19:728:728; default: every "
                        "distinct one)")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_LAYERS} layers, fewer repeats (a smoke run)")
    p.add_argument("--repeats", type=_positive,
                   help="timed calls per case (default 30 on GPU, 5 on CPU; --quick: 10 / 3)")
    p.add_argument("--verify-batch", type=_positive,
                   help="batch for the reference check (default: up to 16 on GPU, 1 on CPU)")
    p.add_argument("--out", type=Path, default=Path("xsep-bench"), help="results folder (default ./xsep-bench)")
    p.add_argument("--allocator", type=_csv(list(ALLOCATOR_SETTINGS)),
                   help="run in a fresh process per setting (comma-separated): 'default' (glibc's own: large "
                        "outputs page-faulted in on every call) or 'retain' (MALLOC_MMAP_THRESHOLD_ and "
                        "MALLOC_TRIM_THRESHOLD_ raised: freed memory is reused); default: this process's environment")
    p.set_defaults(func=run)


def _device(name: str | None) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("xsep bench: --device cuda but no CUDA GPU is visible")
    return torch.device(name)


def _backends(requested: list[str] | None, device: torch.device, ops: list[str]) -> list[str]:
    """The backends to compare: those asked for, or every one that runs at least one of `ops` on
    `device` (ops a backend lacks are left out of its rows, see layers.bench_layers)."""
    from xsep import backends

    chosen = []
    for b in requested or ["native", "triton"]:
        reasons = [backends.unavailable_reason(b, device, f"{op}_conv2d") for op in ops]
        if any(r is None for r in reasons):
            chosen.append(b)
            for op, r in zip(ops, reasons):
                if r is not None:
                    print(f"(backend '{b}' on {device}: no {op} rows: {r})")
        elif requested:
            raise SystemExit(f"xsep bench: backend '{b}' cannot run on {device}: {reasons[-1]}")
        else:
            print(f"(skipping backend '{b}' on {device}: {reasons[-1]})")
    return chosen


class _Progress:
    """A tqdm bar when tqdm is installed, else one line per step."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, leave=False,
                            disable=None)  # None: no bar when stderr is not a terminal (CI logs)
        except ImportError:
            self.bar, self.n, self.total = None, 0, total

    def __call__(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(what)
            self.bar.update(1)
        else:
            self.n += 1
            print(f"[{self.n}/{self.total}] {what}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_CHILD = "import pickle, sys; from xsep.bench import cli; sys.exit(cli.run(pickle.loads(sys.stdin.buffer.read())))"


def _command_line(args: argparse.Namespace) -> str:
    return getattr(args, "command_line", None) or " ".join(["python -m xsep bench"] + sys.argv[2:])


def _rerun(args: argparse.Namespace, setting: str) -> int:
    """The same bench in a fresh Python process with the allocator environment of `setting` (glibc
    reads it at start-up); the child gets these arguments pickled on stdin, so nothing is re-parsed."""
    from xsep.bench.timing import allocator_environ

    child = argparse.Namespace(**vars(args))
    child.allocator, child.allocator_child = [setting], True
    child.command_line = _command_line(args)
    env = allocator_environ(setting, os.environ)
    root = str(Path(__file__).resolve().parents[2])  # xsep importable in the child as it is here
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    print(f"xsep bench: allocator '{setting}' in a fresh process", flush=True)
    return subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps(child), env=env).returncode


def _needs_rerun(args: argparse.Namespace) -> bool:
    from xsep.bench.timing import allocator

    requested = getattr(args, "allocator", None)
    if not requested or getattr(args, "allocator_child", False):
        return False
    return len(requested) > 1 or allocator()["setting"] != requested[0]


def _add_fresh_memory(rows: list[dict], device: torch.device, repeats: int, cache: dict[int, dict]) -> None:
    """Each row's "output_bytes" and "fresh_memory_seconds": what allocating and filling that many
    fresh bytes costs over filling mapped memory, measured once per size in this run."""
    from xsep.bench.ceilings import fresh_memory
    from xsep.bench.work import work

    for r in rows:
        w = work(r["op"], r["mode"], batch=r["batch"], in_channels=r["in_channels"], out_channels=r["out_channels"],
                 size=r["size"], kernel_size=r["kernel_size"], stride=r["stride"],
                 depth_multiplier=r["depth_multiplier"],
                 element_size=torch.empty((), dtype=DTYPES[r["dtype"]]).element_size())
        nbytes = int(w.output_bytes)
        if nbytes not in cache:
            cache[nbytes] = fresh_memory(device, nbytes, repeats=repeats)
        r["output_bytes"], r["fresh_memory_seconds"] = nbytes, cache[nbytes]["cost_seconds"]


def run(args: argparse.Namespace) -> int:
    from xsep._optional import MissingDependency
    from xsep.bench import ceilings, layers, models, report, shapes, timing

    if _needs_rerun(args):
        return max(_rerun(args, setting) for setting in args.allocator)
    if args.model:
        try:
            models.require(args.model)  # before anything is measured
        except MissingDependency as e:
            raise SystemExit(str(e)) from None
        except ValueError as e:
            raise SystemExit(f"xsep bench: {e}") from None
    device = _device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True  # the baseline at its best: cuDNN picks its fastest algorithm
    dtypes = [DTYPES[d] for d in (args.dtype or (["bfloat16"] if on_gpu else ["float32"]))]
    batch = args.batch or (128 if on_gpu else 8)
    repeats = args.repeats or ((10 if args.quick else 30) if on_gpu else 3 if args.quick else 5)
    statistic = "median" if on_gpu else "min"  # the minimum filters a shared CPU's random stalls
    backend_names = _backends(args.backends, device, args.ops)
    baseline = "cuDNN" if on_gpu else "oneDNN"
    settings = {"batch": batch, "dtypes": [str(d).removeprefix("torch.") for d in dtypes], "layouts": args.layout,
                "backends": backend_names, "baseline": f"torch ({baseline})", "repeats": repeats,
                "statistic": statistic, "quick": args.quick, "model": args.model or "xception layers",
                "cudnn_benchmark": on_gpu, "command": _command_line(args), "allocator": timing.allocator()}
    print(f"xsep bench on {report.device_name(device)}: measuring copy bandwidth, matmul rates and fresh memory ...",
          flush=True)
    ceiling = ceilings.measure(device, dtypes[0], quick=args.quick)
    document = report.new_document(device, settings, ceiling)
    for line in report.ceilings_lines(ceiling, settings["allocator"] if not on_gpu else None):
        print(line)

    if args.model:
        progress = _Progress(total=len(dtypes) * len(args.layout) * (2 if args.no_compile else 4) * 2)
        for dtype in dtypes:
            for layout in args.layout:
                document["models"] += models.bench_models(
                    args.model, device=device, batch=batch, dtype=dtype, layout=layout,
                    compile=not args.no_compile, repeats=max(3, repeats // 3) if on_gpu else repeats,
                    # On a CPU with glibc's default allocator the first training steps are slower until
                    # its mmap threshold has grown past the step's tensors (freed mmapped blocks raise it).
                    warmup=2 if on_gpu else 3,
                    statistic=statistic, backend=args.backends[0] if args.backends else None, progress=progress)
        progress.close()
        print(models.table(document["models"]))
        failed = 0
    else:
        layer_list = shapes.unique_layers(shapes.xception_separable_layers())
        if args.layers:
            try:
                layer_list = shapes.select_layers(layer_list, args.layers)
            except ValueError as exc:
                raise SystemExit(f"xsep bench: --layers: {exc}") from None
        if args.quick:  # first, middle and last distinct shape: early wide-spatial to late wide-channel
            layer_list = [layer_list[i] for i in sorted({0, len(layer_list) // 2, len(layer_list) - 1})][:QUICK_LAYERS]
        progress = _Progress(total=len(dtypes) * len(args.layout) * len(layer_list) * len(args.ops) * len(args.modes))
        for dtype in dtypes:
            for layout in args.layout:
                s = layers.Settings(device=device, dtype=dtype, layout=layout, batch=batch,
                                    verify_batch=args.verify_batch or (min(batch, 16) if on_gpu else 1),
                                    repeats=repeats,
                                    warmup=5 if on_gpu else 1, statistic=statistic, ceilings=ceiling)
                document["layers"] += layers.bench_layers(layer_list, args.ops, args.modes, backend_names, s, progress)
        progress.close()
        _add_fresh_memory(document["layers"], device, repeats=3 if args.quick else 5, cache={})
        document["summary"] = report.summarize(document["layers"])
        print(report.table(document["layers"]))
        print()
        for line in report.summary_lines(document["summary"], baseline):
            print(line)
        failed = sum(not r["verified"] for r in document["layers"])

    path = report.results_path(args.out, document["device"]["slug"], document["date"])
    report.write_json(path, document)
    try:
        png = report.chart(document, path.with_suffix(".png"))
    except ImportError:
        png = None
        print("(no chart: matplotlib is not installed; pip install 'xsep[bench]')")
    print(f"results: {path}" + (f", chart: {png}" if png else ""))
    if failed:
        print(f"xsep bench: {failed} case(s) gave wrong answers (see rel.err); they were not timed")
        return 1
    return 0
