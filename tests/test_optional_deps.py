"""A command whose optional dependency is missing ends with one line naming the extra to install
(and a non-zero status), not a traceback. Each case runs `python -m xsep ...` in a subprocess in
which the package cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _run(blocked: list[str], argv: list[str], **env) -> subprocess.CompletedProcess:
    code = (f"import sys\nfor name in {blocked!r}:\n    sys.modules[name] = None  # makes `import name` fail\n"
            f"from xsep.__main__ import main\nsys.exit(main({argv!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


@pytest.mark.parametrize("blocked, argv, line", [
    (["sklearn"], ["train", "--epochs", "1"], 'xsep train needs scikit-learn: pip install "xsep[train]"'),
    (["torchvision"], ["train", "--data", "."], 'xsep train --data FOLDER needs torchvision: pip install "xsep[train]"'),
    (["timm"], ["bench", "--model", "xception", "--device", "cpu"],
     'xsep bench --model xception needs timm: pip install "xsep[bench]"'),
    (["torchvision"], ["bench", "--model", "inception_v3", "--device", "cpu"],
     'xsep bench --model inception_v3 needs torchvision: pip install "xsep[bench]"'),
], ids=["train-digits", "train-folder", "bench-xception", "bench-inception"])
def test_one_line_naming_the_extra(blocked, argv, line):
    result = _run(blocked, argv)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == line, result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_train_under_torchrun_reports_on_rank_0_only():
    result = _run(["sklearn"], ["train", "--epochs", "1"], RANK="1", WORLD_SIZE="2", LOCAL_RANK="1")
    assert result.returncode == 1 and result.stderr.strip() == "", result.stderr
