"""Theoretical occupancy by the CUDA occupancy rules, for an H100 (sm_90) by default."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Sm:
    registers: int = 65536          # per SM
    register_unit: int = 256        # registers are allocated per warp in units of this many
    max_registers_per_thread: int = 255
    shared: int = 228 * 1024        # bytes per SM
    shared_per_block_max: int = 227 * 1024
    shared_reserved_per_block: int = 1024
    max_blocks: int = 32
    max_warps: int = 64
    warp_size: int = 32


H100 = Sm()


@dataclass(frozen=True)
class Occupancy:
    blocks: int          # resident blocks per SM
    warps: int           # resident warps per SM
    fraction: float      # warps / max warps
    limiter: str         # "registers", "shared", "warps", "blocks" (or "too large")

    def to_dict(self) -> dict:
        return asdict(self)


def occupancy(threads_per_block: int, registers_per_thread: int, shared_per_block: int, sm: Sm = H100) -> Occupancy:
    """Blocks and warps one SM holds at once for a kernel with these resources (shared_per_block:
    static plus dynamic bytes, without the 1 KB the system reserves per block)."""
    if threads_per_block <= 0:
        raise ValueError("threads_per_block must be positive")
    warps_per_block = -(-threads_per_block // sm.warp_size)
    if (registers_per_thread > sm.max_registers_per_thread or shared_per_block > sm.shared_per_block_max
            or warps_per_block > sm.max_warps):
        return Occupancy(0, 0, 0.0, "too large")
    limits = {"blocks": sm.max_blocks, "warps": sm.max_warps // warps_per_block}
    regs_per_warp = -(-max(registers_per_thread, 1) * sm.warp_size // sm.register_unit) * sm.register_unit
    limits["registers"] = (sm.registers // regs_per_warp) // warps_per_block
    limits["shared"] = sm.shared // (shared_per_block + sm.shared_reserved_per_block)
    # the binding limit; on a tie the hardware's own limits (warps, blocks) are named first
    limiter = min(("warps", "blocks", "registers", "shared"), key=lambda k: limits[k])
    blocks = limits[limiter]
    warps = blocks * warps_per_block
    return Occupancy(blocks, warps, warps / sm.max_warps, limiter if blocks else "too large")
