"""SASS text (`cuobjdump -sass` or `nvdisasm` output) -> per-function counts of memory accesses by
kind and width, and which of them sit inside a loop.

A loop is a backward branch: the instructions from its target (an address, or a label) up to the
branch itself. An access between the two is "in a loop" (the hot path of a kernel: a tile loop, a
K loop or a grid-stride loop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# /*0850*/   @!P0 LDG.E.128.CONSTANT R4, desc[UR8][R6.64] ;   /* 0x... */
_INSTRUCTION = re.compile(
    r"^\s*/\*(?P<addr>[0-9a-fA-F]+)\*/\s+(?:@!?U?P[T0-9]+\s+)?(?P<op>[A-Z][A-Z0-9_.]*)(?P<args>[^;]*);"
)
_FUNCTION = re.compile(r"^\s*Function\s*:\s*(?P<name>\S+)")
_NVDISASM_FUNCTION = re.compile(r"^\s*\.text\.(?P<name>\S+?):?\s*$")
_LABEL = re.compile(r"^\s*(?P<label>\.?L[\w.$]*)\s*:")
_HEX_TARGET = re.compile(r"0x(?P<hex>[0-9a-fA-F]+)\s*$")
_LABEL_TARGET = re.compile(r"`\((?P<label>[^)]+)\)")

BRANCHES = ("BRA", "BRX", "JMP", "JMX")
# Kinds counted by width (bits) ...
WIDTH_KINDS = ("LDG", "STG", "LDS", "STS", "LDGSTS", "LDL", "STL")
# ... and kinds only counted.
COUNT_KINDS = ("LDSM", "HMMA", "HGMMA", "CALL")


def classify(opcode: str) -> str | None:
    """The counter an opcode goes to: 'LDG.128', 'STG.16', 'LDS.32', 'LDSM', 'HMMA', 'CALL', ...;
    None for everything else. Width from the opcode's modifiers: .128, .64, .U16/.S16/.16, .U8/.S8,
    else 32 bits (cache hints such as .LTC128B or .CONSTANT do not count)."""
    parts = opcode.split(".")
    base, mods = parts[0], parts[1:]
    if base == "CALL" and "REL" in mods:
        return "CALL"
    if base in COUNT_KINDS:
        return base
    if base not in WIDTH_KINDS:
        return None
    if "128" in mods:
        width = 128
    elif "64" in mods:
        width = 64
    elif any(m in ("U16", "S16", "16") for m in mods):
        width = 16
    elif any(m in ("U8", "S8", "8") for m in mods):
        width = 8
    else:
        width = 32
    return f"{base}.{width}"


@dataclass
class Instruction:
    addr: int
    op: str
    args: str


@dataclass
class FunctionSass:
    """One function's counters: `counts[key]` over the whole function, `in_loops[key]` for those
    inside a loop; `loops` as (first address, branch address)."""

    name: str
    counts: dict[str, int] = field(default_factory=dict)
    in_loops: dict[str, int] = field(default_factory=dict)
    loops: list[tuple[int, int]] = field(default_factory=list)
    instructions: int = 0

    @property
    def global16_in_loops(self) -> int:
        """Scalar 16-bit global loads and stores inside loops (what a bf16 kernel should not have)."""
        return self.in_loops.get("LDG.16", 0) + self.in_loops.get("STG.16", 0)

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "in_loops": dict(sorted(self.in_loops.items())),
                "loops": len(self.loops), "instructions": self.instructions,
                "global16_in_loops": self.global16_in_loops}


def _split_functions(text: str) -> list[tuple[str, list[str]]]:
    functions: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = _FUNCTION.match(line) or _NVDISASM_FUNCTION.match(line)
        if m:
            functions.append((m.group("name"), []))
        elif functions:
            functions[-1][1].append(line)
    return functions


def _parse_function(name: str, lines: list[str]) -> FunctionSass:
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    pending: list[str] = []  # labels waiting for the next instruction's address
    for line in lines:
        m = _INSTRUCTION.match(line)
        if m:
            ins = Instruction(int(m.group("addr"), 16), m.group("op"), m.group("args"))
            instructions.append(ins)
            for label in pending:
                labels[label] = ins.addr
            pending = []
            continue
        m = _LABEL.match(line)
        if m:
            pending.append(m.group("label"))
    fn = FunctionSass(name, instructions=len(instructions))
    for ins in instructions:
        if ins.op.split(".")[0] not in BRANCHES:
            continue
        target = None
        m = _LABEL_TARGET.search(ins.args)
        if m and m.group("label") in labels:
            target = labels[m.group("label")]
        else:
            m = _HEX_TARGET.search(ins.args.strip())
            if m:
                target = int(m.group("hex"), 16)
        if target is not None and target < ins.addr:  # backward (a branch to itself is the exit trap)
            fn.loops.append((target, ins.addr))
    for ins in instructions:
        key = classify(ins.op)
        if key is None:
            continue
        fn.counts[key] = fn.counts.get(key, 0) + 1
        if any(lo <= ins.addr <= hi for lo, hi in fn.loops):
            fn.in_loops[key] = fn.in_loops.get(key, 0) + 1
    return fn


def parse(text: str) -> dict[str, FunctionSass]:
    """Every function of a SASS listing, by (mangled) name."""
    return {name: _parse_function(name, lines) for name, lines in _split_functions(text)}
