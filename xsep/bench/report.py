"""What a benchmark run leaves behind: the printed table, the geometric-mean summary, the JSON
results file (`<out>/<device>/<date>.json`, schema below) and a PNG chart of per-layer speedups.

JSON schema "xsep-bench/1": {"schema", "date", "device": {"type", "name", "slug", ...ceilings, and for a CPU
"cpu_isa", "cpu_gemm", "cpu_weight_gemm", "cpu_fused_gemm", "cpu_stream_stores", "cpu_prefetch",
"cpu_run_vectors", "cpu_depthwise_runs", "cpu_weight_packing" and "cpu_nchw_depthwise" (the instruction set of xsep's
kernels, the library of its products, what runs its weight gradients' products and its channels-last fused op's,
when it writes outputs past the caches, when its depthwise weight gradient prefetches its next rows, on which rows
its channels-last depthwise runs take two vectors of channels, which of those rows take runs rather than unit tiles,
whether its weight product packs narrow operand rows, what runs its NCHW depthwise on small planes) and
"cpu_family_model" ('family 26 model 2', cpu_family_model)},
"versions", "settings", "layers": [row, ...] (see layers.bench_case), "models": [row, ...],
"summary": [{"op", "mode", "backend", "dtype", "layout", "geomean_speedup", "network_speedup", "layers"}]}.
The ceilings (ceilings.measure): "copy_bytes_per_s", "matmul_flops_per_s" (the best GEMM),
"matmul_source" (which one), "matmul_candidates" ({"torch.mm (MKL)": FLOP/s, "1x1 conv2d (oneDNN)": FLOP/s}),
"matmul_dtype", "fresh_memory" (ceilings.fresh_memory at 64 MiB); "settings"."allocator" is
timing.allocator(); each layer row has "output_bytes" and "fresh_memory_seconds" (the cost of touching
that many fresh bytes, measured in the run). Files written before these fields existed lack them.
Every ratio is baseline time / backend time (> 1: faster than the baseline), both measured in the
same run on the same device.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import re
from pathlib import Path

import torch

SCHEMA = "xsep-bench/1"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where it cannot be read)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_family_model() -> str | None:
    """The CPU's family and model numbers as /proc/cpuinfo gives them, 'family 26 model 2' (None where
    it cannot be read): one model name covers generations ('AMD EPYC': Zen 4 is family 25, Zen 5
    family 26) whose speeds differ."""
    fields = _cpuinfo()
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']} model {fields['model']}"


def cpu_kind(name: str, isa: str | None, family_model: str | None = None) -> str:
    """The name committed results and the automatic choice know a kind of CPU by: its model name, the
    instruction set xsep's kernels use on it and its family and model numbers, 'AMD EPYC (avx512,
    family 26 model 2)' (one model name covers AVX2 and AVX-512 parts, and generations); results
    recorded before the family was, by the first two; before the instruction set was, by the name."""
    details = ", ".join(d for d in (isa, family_model if isa else None) if d)
    return f"{name} ({details})" if details else name


def cpu_build() -> dict:
    """The instruction set and GEMM libraries xsep's CPU kernels use here (empty without the library)."""
    from xsep import _extension

    info = _extension.build_info()
    keys = ("cpu_isa", "cpu_gemm", "cpu_weight_gemm", "cpu_fused_gemm", "cpu_stream_stores", "cpu_prefetch",
            "cpu_run_vectors", "cpu_depthwise_runs", "cpu_weight_packing", "cpu_nchw_depthwise")
    return {key: info[key] for key in keys if key in info}


def device_slug(device: torch.device) -> str:
    """A folder name for the device: 'nvidia-h100-80gb-hbm3', 'cpu-amd-epyc-avx512-2t' (a CPU's
    model name, the instruction set of xsep's kernels where the library loads, the thread count)."""
    name = device_name(device).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", re.sub(r"\(r\)|\(tm\)|processor|\d+-core", "", name)).strip("-")
    if device.type == "cpu":
        isa = cpu_build().get("cpu_isa")
        slug = f"cpu-{slug}{'-' + isa if isa else ''}-{torch.get_num_threads()}t"
    return slug


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def summarize(rows: list[dict]) -> list[dict]:
    """Per (op, mode, backend, dtype, layout): the geometric mean of the per-layer speedups over the
    distinct layers, and the whole-network ratio (sum over all layers, repeats counted, of the
    baseline's time over the backend's)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["op"], r["mode"], r["backend"], r["dtype"], r["layout"]), []).append(r)
    out = []
    for (op, mode, backend, dtype, layout), rs in groups.items():
        timed = [r for r in rs if r["seconds"] and r["baseline_seconds"]]
        total = sum(r["count"] * r["seconds"] for r in timed)
        base = sum(r["count"] * r["baseline_seconds"] for r in timed)
        out.append({"op": op, "mode": mode, "backend": backend, "dtype": dtype, "layout": layout,
                    "geomean_speedup": geomean([r["speedup"] for r in timed]),
                    "network_speedup": base / total if total else None,
                    "layers": len(timed), "failed": sum(not r["verified"] for r in rs)})
    return out


def _fmt(v, spec: str, missing: str = "-") -> str:
    if v is None:
        width = re.match(r"\d*", spec).group()
        return missing.rjust(int(width)) if width else missing
    return format(v, spec)


def table(rows: list[dict]) -> str:
    """Per row: time, speedup, rates, the floor and beside it the fresh-memory cost (allocating and
    page-faulting the op's outputs: part of every measured time, not of the floor), % of the floor."""
    head = (f"{'layer':<24} {'op':<9} {'mode':<16} {'backend':<7} {'ms':>9} {'speedup':>8} {'GB/s':>8} "
            f"{'TFLOP/s':>8} {'floor ms':>9} {'fresh ms':>9} {'%floor':>7} {'rel.err':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r['size']}x{r['size']} {r['in_channels']}->{r['out_channels']}"
        status = "" if r["verified"] else "  WRONG (not timed)"
        floor, fresh = r.get("floor_seconds"), r.get("fresh_memory_seconds")
        lines.append(f"{shape:<24} {r['op']:<9} {r['mode']:<16} {r['backend']:<7} "
                     f"{_fmt(r['seconds'] and 1e3 * r['seconds'], '9.3f')} {_fmt(r['speedup'], '7.2f')}x "
                     f"{_fmt(r['gbytes_per_s'], '8.1f')} {_fmt(r['tflops_per_s'], '8.3f')} "
                     f"{_fmt(floor and 1e3 * floor, '9.3f')} {_fmt(fresh if fresh is None else 1e3 * fresh, '9.3f')} "
                     f"{_fmt(r['percent_of_floor'], '6.1f')}% {r['rel_error']:8.1e}{status}")
    return "\n".join(lines)


def ceilings_lines(device: dict, allocator: dict | None = None) -> list[str]:
    """The printed header: the ceilings, where the matmul ceiling comes from, and (CPU) the fresh-memory
    cost and the allocator setting. Older documents' devices lack the newer fields."""
    candidates = device.get("matmul_candidates") or {}
    others = ", ".join(f"{name} {_fmt(rate and rate / 1e12, '.2f')}" for name, rate in candidates.items()
                       if name != device.get("matmul_source"))
    source = f" from {device['matmul_source']}" if device.get("matmul_source") else ""
    lines = [f"ceilings: copy {device['copy_bytes_per_s'] / 1e9:.1f} GB/s, {device['matmul_dtype']} matmul "
             f"{device['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s{source}" + (f" ({others} TFLOP/s)" if others else "")]
    fresh = device.get("fresh_memory")
    if fresh:
        faults = f", {fresh['page_faults']:.0f} page faults" if fresh.get("page_faults") is not None else ""
        lines.append(f"fresh memory ({fresh['bytes'] / 2**20:.0f} MiB): "
                     f"allocate+fill {1e3 * fresh['fresh_seconds']:.2f} ms, "
                     f"fill mapped {1e3 * fresh['mapped_seconds']:.2f} ms: +{1e3 * fresh['cost_seconds']:.2f} ms per "
                     f"fresh output{faults}")
    if allocator:
        env = " ".join(f"{k}={v}" for k, v in allocator["env"].items())
        extra = ", ".join(x for x in (env, " ".join(allocator["preload"]),
                                      allocator.get("thp") and f"kernel THP {allocator['thp']}") if x)
        lines.append(f"allocator: {allocator['setting']}" + (f" ({extra})" if extra else ""))
    return lines


def summary_lines(summary: list[dict], baseline_name: str) -> list[str]:
    lines = []
    for s in summary:
        if s["backend"] == "torch":
            continue
        fail = f", {s['failed']} FAILED verification" if s["failed"] else ""
        lines.append(f"{s['op']} {s['mode']} [{s['backend']} vs {baseline_name}, {s['dtype']}, {s['layout']}]: "
                     f"geometric mean {_fmt(s['geomean_speedup'], '.2f')}x over {s['layers']} distinct layers, "
                     f"whole network {_fmt(s['network_speedup'], '.2f')}x{fail}")
    return lines


def results_path(out: Path, slug: str, date: str) -> Path:
    """`out/slug/date.json`, or date-2.json, date-3.json... when that run's file already exists."""
    folder = out / slug
    folder.mkdir(parents=True, exist_ok=True)
    path, n = folder / f"{date}.json", 2
    while path.exists():
        path, n = folder / f"{date}-{n}.json", n + 1
    return path


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=1) + "\n")


def load(path: Path) -> dict:
    document = json.loads(Path(path).read_text())
    if document.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an xsep benchmark results file (schema {document.get('schema')!r}, "
                         f"expected {SCHEMA!r})")
    return document


def chart(document: dict, path: Path) -> Path | None:
    """A PNG of per-layer speedups (one panel per op and mode, one bar per backend and layer);
    None when there is nothing to draw."""
    rows = [r for r in document["layers"] if r["backend"] != "torch" and r["speedup"]]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["op"], r["mode"], r["dtype"], r["layout"]) for r in rows},
                    key=lambda p: (p[2], p[3], ["depthwise", "pointwise", "separable"].index(p[0]), p[1]))
    backends = sorted({r["backend"] for r in rows})
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), squeeze=False)
    for ax, (op, mode, dtype, layout) in zip(axes[:, 0], panels):
        panel = [r for r in rows if (r["op"], r["mode"], r["dtype"], r["layout"]) == (op, mode, dtype, layout)]
        labels = list(dict.fromkeys(f"{r['size']}² {r['in_channels']}→{r['out_channels']}" for r in panel))
        width = 0.8 / len(backends)
        for i, b in enumerate(backends):
            by_label = {f"{r['size']}² {r['in_channels']}→{r['out_channels']}": r["speedup"] for r in panel
                        if r["backend"] == b}
            ax.bar([j + i * width for j in range(len(labels))], [by_label.get(lab, 0) for lab in labels],
                   width, label=b)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("speedup")
        ax.set_title(f"{op} {mode} ({dtype}, {layout})", fontsize=9)
        ax.legend(fontsize=7)
    device = document["device"]
    fig.suptitle(f"xsep vs {document['settings']['baseline']} on {device['name']}, batch "
                 f"{document['settings']['batch']}, {document['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def new_document(device: torch.device, settings: dict, ceilings: dict) -> dict:
    import xsep

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "schema": SCHEMA,
        "date": datetime.date.today().isoformat(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": {"type": device.type, "name": device_name(device), "slug": device_slug(device),
                   "threads": torch.get_num_threads() if device.type == "cpu" else None,
                   **(cpu_build() if device.type == "cpu" else {}),
                   **({"cpu_family_model": cpu_family_model()} if device.type == "cpu" else {}), **ceilings},
        "versions": {"xsep": xsep.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
                     "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                     "triton": triton_version, "python": platform.python_version()},
        "settings": settings,
        "layers": [],
        "models": [],
        "summary": [],
    }


def model_rows(rows: list[dict]) -> list[dict]:
    """Whole-model rows with the speedup on the xsep row (`speedup`, `baseline`; None on the baseline's
    row). Files written before that change held `xsep_speedup` on the baseline's row (its time over
    xsep's, the same ratio) and 1.0 on xsep's: moved here, so that old results still render."""
    if all("speedup" in r for r in rows):
        return rows
    out = [dict(r, speedup=None, baseline=None) for r in rows]
    setting = ("mode", "compiled", "batch", "dtype", "layout")
    for r in out:
        if r["model"].startswith("xsep"):
            for other in out:
                if not other["model"].startswith("xsep") and all(other[k] == r[k] for k in setting):
                    r.update(speedup=other["xsep_speedup"], baseline=other["model"])
    return out


def _markdown_extras(doc: dict) -> str:
    """The header's newer facts (matmul source, fresh-memory cost, allocator); '' for older files."""
    device, extras = doc["device"], ""
    if device.get("matmul_source"):
        others = "; ".join(f"{name} {rate / 1e12:.2f}" for name, rate in device.get("matmul_candidates", {}).items()
                           if rate and name != device["matmul_source"])
        extras += f" ({device['matmul_source']}" + (f"; {others}" if others else "") + ")"
    fresh = device.get("fresh_memory")
    if fresh:
        extras += f"; fresh memory +{1e3 * fresh['cost_seconds']:.1f} ms per {fresh['bytes'] / 2**20:.0f} MiB output"
    allocator = doc["settings"].get("allocator")
    if allocator:
        extras += f"; allocator {allocator['setting']}"
    return extras


def measured_on(doc: dict) -> tuple:
    """What a results file's numbers depend on besides the code: the kind of device (report.cpu_kind for a
    CPU, with its thread count) and, on a CPU, the host allocator setting ('default' where not recorded):
    (type, name) for other devices, ('cpu', kind, threads, allocator) for a CPU."""
    device = doc["device"]
    if device["type"] != "cpu":
        return device["type"], device["name"]
    allocator = (doc.get("settings", {}).get("allocator") or {}).get("setting", "default")
    kind = cpu_kind(device["name"], device.get("cpu_isa"), device.get("cpu_family_model"))
    return "cpu", kind, device.get("threads"), allocator


def _model_groups(doc: dict) -> dict[tuple, list[dict]]:
    """A file's whole-model rows by comparison: the rows of one setting (mode, compiled, dtype, layout,
    batch), keyed by that setting and the models compared (xsep's and its baselines, kept together)."""
    groups: dict[tuple, list[dict]] = {}
    for r in doc.get("models", []):
        setting = tuple(r.get(k) for k in ("mode", "compiled", "dtype", "layout", "batch"))
        groups.setdefault(setting, []).append(r)
    return {(setting, frozenset(r["model"] for r in rows)): rows for setting, rows in groups.items()}


def newest_rows(documents: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """The documents (oldest first) reduced to what no later file measured again on the same kind of
    device with the same allocator setting: op rows by (backend, op, mode, dtype, layout, batch), model
    rows by comparison (_model_groups); files left with nothing are dropped. The README shows these, the
    newest number for each case; benchmarks/results/README.md every file whole."""
    seen: set[tuple] = set()
    kept = []
    for path, doc in reversed(documents):
        where, batch = measured_on(doc), doc.get("settings", {}).get("batch")
        summary = []
        for s in doc.get("summary", []):
            key = (where, "op", s["backend"], s["op"], s["mode"], s["dtype"], s["layout"], batch)
            if key not in seen:
                summary.append(s)
                seen.add(key)
        models = []
        for group, rows in _model_groups(doc).items():
            if (where, "models", group) not in seen:
                models += rows
                seen.add((where, "models", group))
        if any(s["backend"] != "torch" for s in summary) or models:
            kept.append((path, dict(doc, summary=summary, models=models)))
    return kept[::-1]


def markdown(documents: list[tuple[Path, dict]], root: Path) -> str:
    """The README's performance tables: per results file, the geometric-mean speedup of each
    backend per op and mode, naming device, dtype, layout, batch and date, and the whole-model rows."""
    lines = []
    for path, doc in documents:
        settings, device = doc["settings"], doc["device"]
        rel = path.relative_to(root) if path.is_absolute() and path.is_relative_to(root) else path
        threads = f", {device['threads']} threads" if device.get("threads") else ""
        labels = (("cpu_isa", "kernels"), ("cpu_gemm", "products"), ("cpu_weight_gemm", "weight products"),
                  ("cpu_fused_gemm", "fused products"))
        isa = "".join(f", {label} {device[key]}" for key, label in labels if device.get(key))
        if device.get("cpu_family_model"):
            isa = f", {device['cpu_family_model']}{isa}"
        lines += [f"**{device['name']}** ({device['type']}{isa}{threads}), "
                  f"batch {settings['batch']}, {doc['date']}, baseline {settings['baseline']}; measured copy "
                  f"{device['copy_bytes_per_s'] / 1e9:.0f} GB/s, {device['matmul_dtype']} matmul "
                  f"{device['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s{_markdown_extras(doc)}. Data: `{rel}`.", ""]
        if doc["summary"]:
            lines += ["| backend | dtype | layout | op | forward | forward+backward |", "|---|---|---|---|---|---|"]
            cells: dict[tuple, dict] = {}
            for s in doc["summary"]:
                if s["backend"] != "torch":
                    cells.setdefault((s["backend"], s["dtype"], s["layout"], s["op"]), {})[s["mode"]] = s
            for (backend, dtype, layout, op), modes in cells.items():
                def cell(mode):
                    s = modes.get(mode)
                    if s is None or s["geomean_speedup"] is None:
                        return "-"
                    fail = f" ({s['failed']} wrong)" if s["failed"] else ""
                    return f"{s['geomean_speedup']:.2f}x (network {s['network_speedup']:.2f}x){fail}"
                lines.append(f"| {backend} | {dtype} | {layout} | {op} | {cell('forward')} "
                             f"| {cell('forward+backward')} |")
            lines.append("")
        if doc["models"]:
            lines += ["| model | mode | compiled | dtype | layout | batch | images/s "
                      "| speedup (baseline time / xsep time) |", "|---|---|---|---|---|---|---|---|"]
            for r in model_rows(doc["models"]):
                speedup = f"{r['speedup']:.2f}x vs {r['baseline']}" if r["speedup"] is not None else "-"
                lines.append(f"| {r['model']} | {r['mode']} | {'yes' if r['compiled'] else 'no'} | {r['dtype']} | "
                             f"{r.get('layout', '-')} | {r['batch']} | {r['images_per_s']:.1f} | {speedup} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
