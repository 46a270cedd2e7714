"""The ratchet: the bf16 kernels' spills and scalar 16-bit global accesses inside loops, against a
committed baseline of known violations (known_violations.json) that may only shrink. A violation not
in the baseline, or worse than its entry, fails; a known one is a warning; a fixed or improved one
asks for the baseline to be lowered (--update-baseline)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

BASELINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "known_violations.json")
KINDS = {
    "spill_bytes": "bytes spilled (stores + loads)",
    "global16_in_loops": "scalar 16-bit global loads/stores inside loops",
}
CHECKED_DTYPE = "bf16"


def kernel_key(record: dict) -> str:
    """A kernel's name in the baseline: backend, file and instantiation (stable across edits that
    do not rename the kernel; no mangled anonymous-namespace hash)."""
    if record["backend"] == "triton":
        return f"triton:{record['name']}[{record['dtype']}]"
    return f"cuda:{os.path.basename(record['source'])}:{record['name']}"


def violations(records: list[dict]) -> dict[str, dict[str, int]]:
    """{kind: {kernel key: amount}} over the kernels a bf16 layer runs."""
    found: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
    for r in records:
        if CHECKED_DTYPE not in r.get("serves", [r.get("dtype")]):
            continue
        spill = r.get("spill_stores", 0) + r.get("spill_loads", 0)
        if spill:
            found["spill_bytes"][kernel_key(r)] = spill
        g16 = (r.get("sass") or {}).get("global16_in_loops", 0)
        if g16:
            found["global16_in_loops"][kernel_key(r)] = g16
    return found


@dataclass
class Comparison:
    new: list[tuple[str, str, int]]             # (kind, kernel, amount) not in the baseline
    worse: list[tuple[str, str, int, int]]      # (kind, kernel, amount, baseline amount)
    known: list[tuple[str, str, int]]           # as in the baseline
    improved: list[tuple[str, str, int, int]]   # below the baseline (0: fixed, or the kernel is gone)

    @property
    def failed(self) -> bool:
        return bool(self.new or self.worse)


def compare(current: dict[str, dict[str, int]], baseline: dict[str, dict[str, int]]) -> Comparison:
    c = Comparison([], [], [], [])
    for kind in KINDS:
        now, before = current.get(kind, {}), baseline.get(kind, {})
        for key, amount in sorted(now.items()):
            if key not in before:
                c.new.append((kind, key, amount))
            elif amount > before[key]:
                c.worse.append((kind, key, amount, before[key]))
            elif amount == before[key]:
                c.known.append((kind, key, amount))
            else:
                c.improved.append((kind, key, amount, before[key]))
        for key, amount in sorted(before.items()):
            if key not in now:
                c.improved.append((kind, key, 0, amount))
    return c


def load(path: str = BASELINE) -> dict[str, dict[str, int]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return {kind: dict(data.get(kind, {})) for kind in KINDS}


def save(current: dict[str, dict[str, int]], path: str = BASELINE) -> None:
    data = {
        "_comment": ("Known violations of `python -m xsep kernels --check` in the bf16 kernels (compiled for "
                     "sm_90): this list may only shrink. A new or worse entry fails the check; fix the kernel "
                     "instead of adding it. `python -m xsep kernels --update-baseline` rewrites it and refuses "
                     "to add or raise an entry."),
        **{kind: dict(sorted(current.get(kind, {}).items())) for kind in KINDS},
    }
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def format_comparison(c: Comparison) -> list[str]:
    lines = []
    for kind, key, amount, before in c.worse:
        lines.append(f"FAIL worse: {key}: {amount} {KINDS[kind]} (baseline {before})")
    for kind, key, amount in c.new:
        lines.append(f"FAIL new:   {key}: {amount} {KINDS[kind]}")
    for kind, key, amount in c.known:
        lines.append(f"warning (known): {key}: {amount} {KINDS[kind]}")
    for kind, key, amount, before in c.improved:
        lines.append(f"improved: {key}: {amount} {KINDS[kind]} (baseline {before}): lower the baseline "
                     "with `python -m xsep kernels --update-baseline`")
    return lines
