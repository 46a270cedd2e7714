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


NEW_CEILINGS = {"copy_bytes_per_s": 3e10, "matmul_flops_per_s": 3.5e11, "matmul_dtype": "float32",
                "matmul_source": "1x1 conv2d (oneDNN)",
                "matmul_candidates": {"torch.mm (MKL)": 1.6e11, "1x1 conv2d (oneDNN)": 3.5e11},
                "fresh_memory": {"bytes": 64 << 20, "fresh_seconds": 0.03, "mapped_seconds": 0.003,
                                 "cost_seconds": 0.027, "page_faults": 16384.0}}
ALLOCATOR = {"setting": "retain", "env": {"MALLOC_MMAP_THRESHOLD_": "1073741824",
                                          "MALLOC_TRIM_THRESHOLD_": "1073741824"}, "preload": [], "thp": "madvise"}


def test_table_shows_the_floor_and_the_fresh_memory_cost_beside_it():
    row = dict(_row(), floor_seconds=0.004, fresh_memory_seconds=0.0123, output_bytes=1e6)
    head, _, line = report.table([row, _row()]).splitlines()[:3]
    assert head.index("floor ms") < head.index("fresh ms") < head.index("%floor")
    assert "    4.000    12.300 " in line
    assert "        -         -   50.0%" in report.table([_row()]).splitlines()[2]  # older rows: no floor, no fresh cost


def test_ceilings_lines_name_the_source_fresh_memory_and_allocator():
    lines = report.ceilings_lines(NEW_CEILINGS, ALLOCATOR)
    assert lines[0] == ("ceilings: copy 30.0 GB/s, float32 matmul 0.35 TFLOP/s from 1x1 conv2d (oneDNN) "
                        "(torch.mm (MKL) 0.16 TFLOP/s)")
    assert lines[1] == ("fresh memory (64 MiB): allocate+fill 30.00 ms, fill mapped 3.00 ms: +27.00 ms per fresh "
                        "output, 16384 page faults")
    assert lines[2].startswith("allocator: retain (MALLOC_MMAP_THRESHOLD_=1073741824 ") and "kernel THP madvise" in lines[2]
    old = {"copy_bytes_per_s": 3e10, "matmul_flops_per_s": 1.5e11, "matmul_dtype": "float32"}
    assert report.ceilings_lines(old) == ["ceilings: copy 30.0 GB/s, float32 matmul 0.15 TFLOP/s"]


def _render():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("render", Path(__file__).parents[2] / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_new_fields_round_trip_through_render(tmp_path):
    render = _render()
    doc = report.new_document(torch.device("cpu"), {"batch": 8, "baseline": "torch (oneDNN)", "allocator": ALLOCATOR},
                              NEW_CEILINGS)
    doc["layers"] = [dict(_row(), floor_seconds=0.004, fresh_memory_seconds=0.01, output_bytes=1e6),
                     dict(_row(backend="torch", seconds=2.0), floor_seconds=0.004, fresh_memory_seconds=0.01)]
    doc["summary"] = report.summarize(doc["layers"])
    path = tmp_path / "results" / doc["device"]["slug"] / "2026-12-01.json"
    path.parent.mkdir(parents=True)
    report.write_json(path, doc)
    docs = render.documents(tmp_path / "results")
    assert docs[0][1] == json.loads(json.dumps(doc))
    readme = f"intro\n{render.BEGIN}\nstale\n{render.END}\nrest\n"
    new = render.rendered_readme(readme, docs)
    assert new.startswith(f"intro\n{render.BEGIN}\n**") and new.endswith(f"{render.END}\nrest\n")
    assert ("float32 matmul 0.35 TFLOP/s (1x1 conv2d (oneDNN); torch.mm (MKL) 0.16); fresh memory +27.0 ms per "
            "64 MiB output; allocator retain. Data: ") in new
    assert "| native | float32 | channels_last | separable | 2.00x (network 2.00x) | - |" in new
    assert render.rendered_readme(new, docs) == new


def test_older_files_render_as_before():
    doc = {"device": {"name": "AMD EPYC", "type": "cpu", "threads": 2, "copy_bytes_per_s": 28e9,
                      "matmul_flops_per_s": 1.5e11, "matmul_dtype": "float32"},
           "settings": {"batch": 8, "baseline": "torch (oneDNN)"}, "date": "2026-11-28", "summary": [], "models": []}
    from pathlib import Path

    assert report.markdown([(Path("r.json"), doc)], Path(".")) == (
        "**AMD EPYC** (cpu, 2 threads), batch 8, 2026-11-28, baseline torch (oneDNN); measured copy 28 GB/s, "
        "float32 matmul 0.15 TFLOP/s. Data: `r.json`.\n")


def test_readme_keeps_the_newest_measurement_of_each_case():
    # The README shows, per kind of device and allocator setting, each op row and each model comparison
    # from the newest file that measured it; a file left with nothing is dropped, and other kinds of
    # CPU or allocator settings keep their own newest rows.
    def doc(family, allocator, ops=(), models=()):
        summary = [{"backend": b, "op": "depthwise", "mode": m, "dtype": "float32", "layout": "nchw",
                    "geomean_speedup": 1.0} for b in ("native", "torch") for m in ops]
        rows = [{"model": name, "mode": "inference", "compiled": False, "dtype": "float32", "layout": "nchw",
                 "batch": 8} for name in models]
        return {"device": {"type": "cpu", "name": "Some CPU", "cpu_isa": "avx512", "cpu_family_model": family,
                           "threads": 2}, "settings": {"batch": 8, "allocator": {"setting": allocator}},
                "summary": summary, "models": rows}

    pair = ("xsep m (converted)", "timm m")
    docs = [("old", doc("family 1", "default", ("forward", "forward+backward"), pair)),
            ("other cpu", doc("family 2", "default", ("forward",))),
            ("retain", doc("family 1", "retain", ("forward",))),
            ("newer forward", doc("family 1", "default", ("forward",))),
            ("newest models", doc("family 1", "default", (), pair)),
            ("other comparison", doc("family 1", "default", (), ("xsep xception", "timm m")))]
    kept = {name: d for name, d in report.newest_rows(docs)}
    assert list(kept) == ["old", "other cpu", "retain", "newer forward", "newest models", "other comparison"]
    assert [(s["backend"], s["mode"]) for s in kept["old"]["summary"]] == [("native", "forward+backward"),
                                                                         ("torch", "forward+backward")]
    assert kept["old"]["models"] == []
    assert [r["model"] for r in kept["newest models"]["models"]] == list(pair)
    assert len(kept["other comparison"]["models"]) == 2
    # Superseded whole: dropped.
    docs.append(("rerun", doc("family 1", "default", ("forward", "forward+backward"))))
    assert [name for name, _ in report.newest_rows(docs)] == ["other cpu", "retain", "newest models",
                                                             "other comparison", "rerun"]


def test_measured_module_keeps_native_cpu_speedups(tmp_path):
    # xsep/_measured.py (the CPU automatic choice's data) holds each CPU's native geometric means
    # per op and layout, (forward, forward+backward), the newest results file winning.
    render = _render()
    old = {"device": {"type": "cpu", "name": "Some CPU"}, "summary": [
        {"backend": "native", "op": "separable", "layout": "nchw", "mode": "forward", "geomean_speedup": 0.5},
        {"backend": "native", "op": "separable", "layout": "nchw", "mode": "forward+backward", "geomean_speedup": 0.6},
        {"backend": "torch", "op": "separable", "layout": "nchw", "mode": "forward", "geomean_speedup": 1.0}]}
    new = {"device": {"type": "cpu", "name": "Some CPU"}, "summary": [
        {"backend": "native", "op": "separable", "layout": "nchw", "mode": "forward", "geomean_speedup": 1.25}]}
    gpu = {"device": {"type": "cuda", "name": "Some GPU"}, "summary": old["summary"]}
    namespace: dict = {}
    exec(render.measured_module([(None, old), (None, new), (None, gpu)]), namespace)
    assert namespace["CPU_SPEEDUPS"] == {"Some CPU": {"default": {("separable_conv2d", "nchw"): (1.25, 0.6)}}}


def test_measured_module_keeps_allocator_settings_apart():
    # Results measured with freed memory kept mapped (bench --allocator retain) are kept apart from
    # those with glibc's defaults; files that do not record the setting count as the default.
    render = _render()
    summary = [{"backend": "native", "op": "depthwise", "layout": "nchw", "mode": "forward", "geomean_speedup": 1.5}]
    retain = [{**summary[0], "geomean_speedup": 0.9}]
    docs = [(None, {"device": {"type": "cpu", "name": "Some CPU"}, "summary": summary}),
            (None, {"device": {"type": "cpu", "name": "Some CPU"}, "summary": retain,
                    "settings": {"allocator": {"setting": "retain"}}})]
    namespace: dict = {}
    exec(render.measured_module(docs), namespace)
    assert namespace["CPU_SPEEDUPS"] == {"Some CPU": {"default": {("depthwise_conv2d", "nchw"): (1.5, None)},
                                                      "retain": {("depthwise_conv2d", "nchw"): (0.9, None)}}}


def test_measured_module_tells_instruction_sets_apart():
    # Results that record the instruction set of xsep's kernels are kept apart from those of the
    # same model name with another one, and from older files that do not record it.
    render = _render()
    summary = [{"backend": "native", "op": "pointwise", "layout": "nchw", "mode": "forward", "geomean_speedup": 1.5}]
    docs = [(None, {"device": {"type": "cpu", "name": "Some CPU"}, "summary": summary}),
            (None, {"device": {"type": "cpu", "name": "Some CPU", "cpu_isa": "avx512"}, "summary": summary}),
            (None, {"device": {"type": "cpu", "name": "Some CPU", "cpu_isa": "avx512",
                               "cpu_family_model": "family 26 model 2"}, "summary": summary})]
    namespace: dict = {}
    exec(render.measured_module(docs), namespace)
    assert set(namespace["CPU_SPEEDUPS"]) == {"Some CPU", "Some CPU (avx512)", "Some CPU (avx512, family 26 model 2)"}


def test_cpu_kind_names_the_generation():
    # One model name ("AMD EPYC") covers Zen 4 (family 25) and Zen 5 (family 26) parts, whose speeds
    # differ: the kind names the family and model numbers where known, and only beside an
    # instruction set (files that record no instruction set record no family either).
    assert report.cpu_kind("AMD EPYC", "avx512", "family 26 model 2") == "AMD EPYC (avx512, family 26 model 2)"
    assert report.cpu_kind("AMD EPYC", "avx512") == "AMD EPYC (avx512)"
    assert report.cpu_kind("AMD EPYC", None, "family 26 model 2") == "AMD EPYC"
    with open("/proc/cpuinfo") as f:
        family = next(line.split(":")[1].strip() for line in f if line.startswith("cpu family"))
    assert report.cpu_family_model().startswith(f"family {family} model ")
