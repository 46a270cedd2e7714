"""`python -m xsep kernels`: what the compiler made of every CUDA and Triton kernel, without a GPU.

Compiles each kernel for sm_90 (nvcc -cubin with the project's flags; Triton's compiler for the
Triton kernels), then reports per kernel its registers, spills, shared memory, theoretical H100
occupancy and the widths of its global and shared memory accesses in the SASS, marking those inside
loops. `--check` compares the bf16 kernels' spills and scalar 16-bit global accesses in loops with a
baseline of known violations (known_violations.json), which may only shrink.

One concern per module: sass (SASS parsing), occupancy (the occupancy rules), toolchain (finding
nvcc, cuobjdump, c++filt), cuda (compiling the .cu files, ptxas figures), triton_kernels (the Triton
kernels, run in a subprocess), ratchet (violations against the baseline), report (text and JSON),
cli (the subcommand).
"""
