"""The benchmark and verification harness behind `python -m xsep bench` and `pytest benchmarks/`.

- shapes.py    layer shapes, derived from the models in xsep.models
- work.py      FLOPs and minimum bytes per op and mode, and the floor they imply
- ceilings.py  the device's measured copy bandwidth and matmul rate
- timing.py    timers (CUDA events or wall clock), warm-up and input rotation
- cases.py     one op on one layer shape for one backend: inputs and the callable to time
- verify.py    each backend against the float64 reference, with the tests' tolerance rule
- layers.py    the per-layer run: verify, then time every backend beside the baseline
- models.py    whole-model throughput (`--model xception`, `--model inception_v3`)
- report.py    the printed table, the JSON results file, the chart
- cli.py       the `bench` subcommand
"""
