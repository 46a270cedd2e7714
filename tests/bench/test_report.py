import json
import math

import pytest
import torch

from xsep.bench import report


def _row(op="separable", backend="native", seconds=1.0, base=2.0, count=1, verified=True, size=19):
    return {"layer": "l", "count": count, "size": size, "in_channels": 8, "out_channels": 16, "op": op,
            "mode": "forward", "backend": backend, "dtype": "float32", "layout": "channels_last",
            "verified": verified, "rel_error": 1e-7, "seconds": seconds if verified else None,
            "baseline_seconds": base, "speedup": base / seconds if verified else None,
            "gbytes_per_s": 1.0, "tflops_per_s": 0.1, "percent_of_floor": 50.0}


def test_geomean_and_network_ratio():
    rows = [_row(seconds=1.0, base=4.0, count=1), _row(seconds=1.0, base=1.0, count=3, size=10)]
    (s,) = report.summarize(rows)
    assert s["geomean_speedup"] == pytest.approx(2.0)             # sqrt(4 * 1)
    assert s["network_speedup"] == pytest.approx((4 + 3) / (1 + 3))  # repeats weighted by count
    assert s["layers"] == 2 and s["failed"] == 0


def test_failed_verification_is_counted_and_not_averaged():
    rows = [_row(seconds=1.0, base=2.0), _row(verified=False, size=10)]
    (s,) = report.summarize(rows)
    assert s["failed"] == 1 and s["layers"] == 1 and s["geomean_speedup"] == pytest.approx(2.0)
    assert "WRONG" in report.table(rows)
    assert "1 FAILED" in report.summary_lines([s], "oneDNN")[0]


def test_geomean_edge_cases():
    assert report.geomean([]) is None
    assert report.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert math.isclose(report.geomean([3.0]), 3.0)


def test_results_path_never_overwrites(tmp_path):
    first = report.results_path(tmp_path, "cpu-x-2t", "2026-11-28")
    first.write_text("{}")
    second = report.results_path(tmp_path, "cpu-x-2t", "2026-11-28")
    assert first.name == "2026-11-28.json" and second.name == "2026-11-28-2.json"


def test_document_round_trip_and_chart(tmp_path):
    doc = report.new_document(torch.device("cpu"), {"batch": 8, "baseline": "torch (oneDNN)"},
                              {"copy_bytes_per_s": 1e10, "matmul_flops_per_s": 1e11, "matmul_dtype": "float32"})
    doc["layers"] = [_row(), _row(backend="torch", seconds=2.0)]
    doc["summary"] = report.summarize(doc["layers"])
    path = tmp_path / "r.json"
    report.write_json(path, doc)
    loaded = report.load(path)
    assert loaded["schema"] == report.SCHEMA and loaded["layers"] == doc["layers"]
    assert loaded["device"]["slug"].startswith("cpu-") and loaded["device"]["slug"].endswith("t")
    png = report.chart(loaded, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"date": "2026-11-28"}))
    with pytest.raises(ValueError, match="not an xsep benchmark results file"):
        report.load(path)


def test_model_rows_of_older_files_move_the_speedup_to_the_xsep_row():
    # Files written before the fix held baseline time / xsep time on the baseline's row, 1.0 on xsep's.
    common = {"mode": "inference", "compiled": False, "batch": 8, "dtype": "float32", "layout": "channels_last"}
    old = [dict(common, model="xsep xception", images_per_s=5.3, xsep_speedup=1.0),
           dict(common, model="timm legacy_xception", images_per_s=4.9, xsep_speedup=1.08),
           dict(common, mode="training", model="xsep xception", images_per_s=1.9, xsep_speedup=1.0),
           dict(common, mode="training", model="timm legacy_xception", images_per_s=1.7, xsep_speedup=1.1)]
    rows = report.model_rows(old)
    assert [(r["speedup"], r["baseline"]) for r in rows] == [
        (1.08, "timm legacy_xception"), (None, None), (1.1, "timm legacy_xception"), (None, None)]
    new = [dict(r, speedup=r["speedup"], baseline=r["baseline"]) for r in rows]
    assert report.model_rows(new) == new
