"""The C++ side of the ops' contract is generated from xsep/ops/schemas.py (xsep/_build.py), so the
kernels' activation codes and the compiled library's schemas cannot drift from the Python side; and
the build flags keep library calls out of the CPU kernels."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess

import pytest
from helpers import require_native

from xsep import _build, _extension
from xsep.ops.schemas import ACTIVATIONS, INPUT_ACTIVATIONS, SCHEMAS


def test_contract_header_follows_schemas_py():
    text = _build.contract_header()
    enum = re.search(r"enum class Activation : int \{(.*?)\};", text)
    assert enum is not None
    assert [e.strip() for e in enum[1].split(",")] == [f"{name} = {code}" for code, name in enumerate(ACTIVATIONS)]
    assert f"kInputActivations = {len(INPUT_ACTIVATIONS)};" in text
    assert re.findall(r'^    "(.*)",$', text, re.MULTILINE) == [name + schema for name, schema in SCHEMAS.items()]


def test_generated_header_is_rewritten_only_when_it_changes(tmp_path):
    # ninja rebuilds by modification time: an unchanged contract must not recompile every kernel.
    path = os.path.join(_build.generate_headers(str(tmp_path)), _build.CONTRACT_HEADER)
    os.utime(path, (0, 0))
    _build.generate_headers(str(tmp_path))
    assert os.path.getmtime(path) == 0


def test_cpu_kernels_call_no_memcpy_and_few_memsets():
    # A partial vector moved through a variable-length memcpy, or a short zero-fill loop that GCC
    # turns into memset (-fno-tree-loop-distribute-patterns, _build.cxx_flags), is a library call in
    # a kernel's inner loop: 4,405 memcpy and 658 memset call sites across the instruction-set builds
    # once, 12% of a small-plane forward's time. Read the loaded library's machine code for them.
    require_native()
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")

    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", "-C", _extension.build_info()["path"]],
                          capture_output=True, text=True, check=True).stdout
    calls: dict[str, list[str]] = {"memcpy": [], "memset": []}
    function = ""
    for line in text.splitlines():
        if line.endswith(">:"):
            function = line
        elif "call" in line and re.search(r"xsep::cpu::(avx512|avx2|baseline)::impl::", function):
            called = re.search(r"<(memcpy|memmove|memset)@plt>", line)
            if called:
                calls["memset" if called[1] == "memset" else "memcpy"].append(function)
    kernels = re.findall(r"^[0-9a-f]+ <.*xsep::cpu::(?:avx512|avx2|baseline)::impl::.*>:$", text, re.MULTILINE)
    assert len(kernels) > 100, "the kernels' functions were not found in the library's symbols"
    assert calls["memcpy"] == [], calls["memcpy"][:5]
    assert len(calls["memset"]) <= 30, calls["memset"][:5]  # 18 today: whole-buffer zeroing, once per call


def test_library_uses_no_iostreams():
    # A toolchain that links libstdc++ statically into the library (the H200 machine's g++ wrapper,
    # 2026-12-04) breaks its iostreams inside a process that loaded the shared libstdc++ (torch does):
    # `ifstream >> int` segfaulted there and, with gcc 12 here, read nothing. Files are read with C stdio.
    found = []
    for root, _, files in os.walk(_build.CSRC):
        for name in files:
            with open(os.path.join(root, name)) as f:
                text = f.read()
            found += [f"{name}: <{h}>" for h in re.findall(r"#include <(fstream|sstream|iostream|istream)>", text)]
    assert not found


def test_hash_files_follows_names_and_contents_not_the_checkout(tmp_path):
    a, b = tmp_path / "a.h", tmp_path / "b.h"
    a.write_text("int x;")
    b.write_text("int x;")
    first = _build.hash_files([a]).hexdigest()
    assert _build.hash_files([a]).hexdigest() == first
    assert _build.hash_files([b]).hexdigest() != first  # same content, another file
    a.write_text("int y;")
    assert _build.hash_files([a]).hexdigest() != first
    # Inside the checkout files are named relative to it: the same sources hash the same anywhere.
    inside = os.path.join(_build.ROOT, "xsep", "_build.py")
    h = hashlib.sha256()
    with open(inside, "rb") as f:
        h.update(b"xsep/_build.py\0" + f.read() + b"\0")
    assert _build.hash_files([inside]).hexdigest() == h.hexdigest()
    assert len(_build.library_sources_hash()) == 64
