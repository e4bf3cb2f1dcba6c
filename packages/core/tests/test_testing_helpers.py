"""The test helpers the labs share: the all-pairs case generator and the torchrun failure report."""

import itertools
import subprocess

from labs_core.testing import failure_report, flags_for, pairwise

SUMMARY = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
job.py FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 11)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_18:15:10
  rank      : 1 (local_rank: 1)
  exitcode  : -6 (pid: 12)  (SIGABRT)
  traceback : Signal 6 (SIGABRT) received by PID 12
============================================================
"""


def test_pairwise_covers_every_pair_with_few_cases():
    factors = {"a": (1, 2), "b": ("x", "y", "z"), "c": (True, False), "d": (0, 1), "e": ("p", "q")}
    cases = pairwise(factors)
    for (f, vf), (g, vg) in itertools.combinations(factors.items(), 2):
        for x, y in itertools.product(vf, vg):
            assert any(c[f] == x and c[g] == y for c in cases), (f, x, g, y)
    assert len(cases) <= 8 < 2 * 3 * 2 * 2 * 2  # far fewer than the full product
    assert pairwise(factors) == cases  # the same set on every run
    seeded = pairwise(factors, seed_cases=({"a": 2, "b": "z", "c": False, "d": 1, "e": "q"},))
    assert seeded[0] == {"a": 2, "b": "z", "c": False, "d": 1, "e": "q"}


def test_flags_for_a_case():
    assert flags_for(
        {"loader": "standard", "channels_last": False, "grad_accum": 2, "ema": None}
    ) == ["--loader", "standard", "--no-channels-last", "--grad-accum", "2"]


def test_failure_report_leads_with_the_first_failing_ranks_own_output():
    result = subprocess.CompletedProcess(["torchrun"], 1, "", "[default0]: noise\n" * 500 + SUMMARY)
    result.rank_output = {
        0: "--- stderr.log:\nRuntimeError: Timed out waiting 30000ms",
        1: "--- stderr.log:\nterminate called after throwing an instance of 'gloo::IoException'",
    }
    report = failure_report(result)
    assert report.index("first failing rank 1's own output") < report.index("rank 0's own output")
    assert (
        "gloo::IoException" in report and "Timed out waiting 30000ms" in report
    )  # both ranks, whole
    assert "exitcode  : -6" in report and "noise" not in report
