"""xsep.bench.timing: what the timers call, and in which order."""

import torch

from xsep.bench.timing import summarize, time_calls


def test_time_calls_rotates_the_order_of_the_compared_calls():
    # With a fixed order the second call always runs in memory the first just freed: each name
    # must come first in turn.
    calls = []
    fns = {name: (lambda i, name=name: calls.append(name)) for name in ("a", "b", "c")}
    samples = time_calls(fns, torch.device("cpu"), repeats=4, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    rounds = [calls[3 + 3 * r:6 + 3 * r] for r in range(4)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    assert {name: len(s) for name, s in samples.items()} == {"a": 4, "b": 4, "c": 4}


def test_summarize_statistics():
    assert summarize([3.0, 1.0, 2.0], "min") == 1.0
    assert summarize([3.0, 1.0, 2.0], "median") == 2.0
