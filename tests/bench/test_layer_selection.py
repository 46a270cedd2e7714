"""`python -m xsep bench --layers SIZE:IN:OUT,...`: run only some of the model's layer shapes."""

import json

import pytest

from xsep.__main__ import main
from xsep.bench import shapes
from xsep.bench.shapes import SeparableLayer

TINY = [SeparableLayer("a", 12, 8, 16), SeparableLayer("b", 6, 16, 16), SeparableLayer("c", 6, 16, 16),
        SeparableLayer("d", 4, 16, 32)]


def test_select_layers_keeps_network_order_and_counts():
    unique = shapes.unique_layers(TINY)
    chosen = shapes.select_layers(unique, ["4:16:32", "6:16:16"])
    assert [(layer.name, n) for layer, n in chosen] == [("b", 2), ("d", 1)]


@pytest.mark.parametrize("spec, message", [("5:16:16", "no layer matches 5:16:16; the layers are 12:8:16, 6:16:16"),
                                           ("6x16x16", "SIZE:IN:OUT")])
def test_select_layers_rejects_what_matches_nothing(spec, message):
    with pytest.raises(ValueError, match=message):
        shapes.select_layers(shapes.unique_layers(TINY), [spec])


def test_bench_runs_only_the_selected_layers(native, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(shapes, "xception_separable_layers", lambda: TINY)
    status = main(["bench", "--device", "cpu", "--layers", "6:16:16", "--batch", "1", "--repeats", "1",
                   "--backends", "native", "--ops", "depthwise", "--modes", "forward", "--out", str(tmp_path)])
    assert status == 0, capsys.readouterr().out
    (path,) = tmp_path.glob("*/*.json")
    rows = json.loads(path.read_text())["layers"]
    assert {(r["size"], r["in_channels"], r["out_channels"], r["count"]) for r in rows} == {(6, 16, 16, 2)}
    with pytest.raises(SystemExit, match="--layers: no layer matches 7:1:1"):
        main(["bench", "--device", "cpu", "--layers", "7:1:1", "--out", str(tmp_path)])
