"""The ops themselves, in Python: everything about them that is not a kernel.

- `schemas`: each op's schema and the activation codes (the single source; the C++ library and the
  Triton namespace register exactly these);
- `checks`: argument checks and output sizes (the public API's, and the ops' own);
- `fake`: fake (meta) kernels;  `autograd`: derivatives;  `reference`: the pure-PyTorch oracle;
- `decompositions`: the ops in core ATen, for torch.export and the ONNX exporter.

`register(namespace)` gives a namespace that defines the ops (torch.ops.xsep, torch.ops.xsep_triton)
their fake kernels, autograd and decompositions. Backends pick kernels: see xsep.backends.
"""

from __future__ import annotations

import threading

import torch

from xsep.ops import autograd, decompositions, fake

_libraries: dict[str, torch.library.Library] = {}  # the registrations live as long as these
_lock = threading.Lock()


def register(namespace: str) -> None:
    """Fake kernels, autograd and decompositions for the nine ops of `namespace`, once per namespace."""
    with _lock:
        if namespace in _libraries:
            return
        lib = _libraries[namespace] = torch.library.Library(namespace, "FRAGMENT")
        for name, fn in fake.FAKES.items():
            torch.library.register_fake(f"{namespace}::{name}", fn, lib=lib)
        autograd.register(namespace, lib)
        decompositions.register(namespace)
