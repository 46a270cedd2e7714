"""The C++ side of the ops' contract is generated from xsep/ops/schemas.py (xsep/_build.py), so the
kernels' activation codes and the compiled library's schemas cannot drift from the Python side."""

from __future__ import annotations

import os
import re

from xsep import _build
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
