"""The compiled library registers exactly the ops of xsep/ops/schemas.py with exactly their schemas
(csrc/xsep.cpp defines them from the header the build generates from that file, xsep/_build.py)."""

from __future__ import annotations

import torch

from xsep.ops.schemas import SCHEMAS


def test_compiled_library_registers_exactly_the_schemas(native):
    registered = {schema.name.removeprefix("xsep::"): schema for schema in torch._C._jit_get_all_schemas()
                  if schema.name.startswith("xsep::")}
    assert set(registered) == set(SCHEMAS) | {"_build_info"}
    for name, schema in SCHEMAS.items():
        assert registered[name] == torch._C.parse_schema(f"xsep::{name}{schema}"), name
        assert getattr(torch.ops.xsep, name).default._schema == registered[name]
