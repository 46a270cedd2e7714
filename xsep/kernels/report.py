"""The kernel report as text (one table per source file, two lines per kernel) and as JSON."""

from __future__ import annotations

from xsep.kernels import occupancy, sass

HOW = (
    "Instantiations: every kernel in the cubins of csrc/cuda/*.cu, which hold every instantiation a layer "
    "can run (each launcher's dispatch_dtype instantiates it for f32, f64, f16 and bf16, and every variant "
    "it may pick at run time); dtype = the kernel's first template argument, except the accumulator "
    "kernels (sum_chunks, ordered_sum), whose <f32> serves bf16, f16 and f32 layers. Triton: the kernels "
    "and first configurations tests/triton/compile_for_gpu.py compiles."
)
OCCUPANCY = (
    f"Occupancy: theoretical, on an H100 ({occupancy.H100.registers:,} registers per SM allocated per warp "
    f"in units of {occupancy.H100.register_unit}, {occupancy.H100.shared // 1024} KB shared memory per SM "
    f"with {occupancy.H100.shared_reserved_per_block // 1024} KB reserved per block, at most "
    f"{occupancy.H100.max_blocks} blocks and {occupancy.H100.max_warps} warps per SM); '<=' where dynamic "
    "shared memory is sized at run time (counted as 0)."
)
LEGEND = (
    "Accesses (SASS): kind width:count, (Ln) = n of them inside loops (between a backward branch and its "
    "target); LDG/STG global, LDS/STS shared, LDGSTS cp.async, LDL/STL local (spills), LDSM ldmatrix, "
    "HMMA mma.sync, HGMMA wgmma, CALL calls to internal routines (64-bit division). 'g16' = scalar "
    "16-bit global loads + stores inside loops."
)


def _occupancy_cell(r: dict) -> str:
    o = r.get("occupancy")
    if not o:
        return "?"
    bound = "<=" if r.get("dynamic_smem") == "dynamic" else ""
    return f"{bound}{o['fraction']:.0%} {o['limiter']}"


def _accesses(s: dict | None) -> str:
    if not s:
        return "(no SASS)"
    counts, loops = s["counts"], s["in_loops"]
    groups: dict[str, list[str]] = {}
    for kind in sass.WIDTH_KINDS:
        cells = []
        for width in (8, 16, 32, 64, 128):
            key = f"{kind}.{width}"
            if counts.get(key):
                cells.append(f"{width}:{counts[key]}" + (f"(L{loops[key]})" if loops.get(key) else ""))
        if cells:
            groups[kind] = cells
    for kind in sass.COUNT_KINDS:
        if counts.get(kind):
            groups[kind] = [f"{counts[kind]}" + (f"(L{loops[kind]})" if loops.get(kind) else "")]
    return " | ".join(f"{kind} {' '.join(cells)}" for kind, cells in groups.items()) or "-"


def _smem(r: dict) -> str:
    dyn = r.get("dynamic_smem")
    if r["backend"] == "triton":
        return f"{dyn}"
    return f"{r['static_smem']}+{'dyn' if dyn == 'dynamic' else dyn}"


def format_text(doc: dict, dtypes: list[str] | None = None) -> str:
    """The report; only kernels serving one of `dtypes` (all when None)."""
    v = doc["versions"]
    lines = [f"xsep kernel report, {doc['date']}: CUDA kernels by nvcc {v.get('nvcc', '-')} for "
             f"{v.get('cuda_arch', 'sm_90')} (SASS by cuobjdump {v.get('cuobjdump', '-')}); Triton "
             f"{v.get('triton', '-')} kernels for {v.get('triton_arch', '-')}",
             HOW, OCCUPANCY, LEGEND]
    for part, why in doc.get("skipped", {}).items():
        lines.append(f"SKIPPED {part}: {why}")
    if dtypes:
        lines.append(f"Shown: kernels serving {', '.join(dtypes)}.")
    header = f"{'kernel':<64} {'dtype':>5} {'regs':>4} {'spill st/ld':>11} {'smem':>12} {'block':>5} " \
             f"{'occupancy':>15} {'g16':>4}"
    source = None
    for r in doc["kernels"]:
        if dtypes and not set(r.get("serves", [r["dtype"]])) & set(dtypes):
            continue
        if r["source"] != source:
            source = r["source"]
            lines += ["", f"== {r['backend']} {source}", header]
        name = r["name"] if len(r["name"]) <= 64 else r["name"][:61] + "..."
        g16 = (r.get("sass") or {}).get("global16_in_loops", 0)
        lines.append(f"{name:<64} {r['dtype']:>5} {r['registers']:>4} "
                     f"{str(r['spill_stores']) + '/' + str(r['spill_loads']):>11} {_smem(r):>12} "
                     f"{r.get('block') or '?':>5} {_occupancy_cell(r):>15} {g16:>4}")
        lines.append(f"    {_accesses(r.get('sass'))}")
    return "\n".join(lines) + "\n"


def summary(doc: dict, dtype: str = "bf16") -> str:
    """Totals over the kernels serving `dtype`."""
    ks = [r for r in doc["kernels"] if dtype in r.get("serves", [r["dtype"]])]
    spilling = [r for r in ks if r["spill_stores"]]
    total = {k: sum((r.get("sass") or {}).get("counts", {}).get(k, 0) for r in ks)
             for k in ("LDG.16", "STG.16", "LDG.128", "STG.128")}
    g16 = sum((r.get("sass") or {}).get("global16_in_loops", 0) for r in ks)
    return (f"{dtype}: {len(ks)} kernels; {len(spilling)} spill ({sum(r['spill_stores'] for r in spilling)} bytes "
            f"stored); scalar 16-bit global loads {total['LDG.16']}, stores {total['STG.16']} ({g16} of them "
            f"inside loops); 16-byte global loads {total['LDG.128']}, stores {total['STG.128']}")
