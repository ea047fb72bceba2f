"""bench/bench_scale.py: growth exponents and the "grows with users" flag (with a
negative control), and the harness end to end on a tiny shape, resumable by step."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_scale.py"


@pytest.fixture(scope="module")
def bs():
    """The harness's functions (its module namespace, run without ``__main__``)."""
    return SimpleNamespace(**runpy.run_path(str(BENCH), run_name="bench_scale"))


def _rec(cpu: float, rss: float) -> dict:
    return {"rc": 0, "wall_s": cpu, "cpu_s": cpu, "peak_rss_mb": rss}


def test_exponent_is_log_ratio_over_log_size_ratio(bs):
    """Doubling with the size is exponent 1, flat is 0; non-positive values give None."""
    assert bs.exponent(10.0, 20.0, 0.5, 1.0) == pytest.approx(1.0)
    assert bs.exponent(10.0, 10.0, 0.25, 1.0) == pytest.approx(0.0)
    assert bs.exponent(1.0, 16.0, 0.25, 1.0) == pytest.approx(2.0)
    assert bs.exponent(0.0, 1.0, 0.5, 1.0) is None


def test_claim_memory_growing_with_users_is_flagged(bs):
    """A claim whose own memory (peak minus the load step's) is flat is not flagged; one
    that adds 300 MB from a quarter to a half (exponent > 0.25) is (negative control);
    growth in the data itself (the load step) is not counted against a claim."""
    runs = {}
    for size, load, flat, grows in ((0.25, 500, 800, 900), (0.5, 900, 1210, 1600)):
        label = f"x{size:g}"
        runs[f"ml-20m/{label}/load"] = _rec(1.0, load)
        runs[f"ml-20m/{label}/verify-2.4"] = _rec(4.0 * size, flat)
        runs[f"ml-20m/{label}/verify-2.5"] = _rec(4.0 * size, grows)
    g = bs.growth(runs)
    flat, grows = g["ml-20m/verify-2.4"], g["ml-20m/verify-2.5"]
    assert not flat["grows_with_users"] and flat["pairs"][0]["own_mb"] == [300, 310]
    assert grows["grows_with_users"]
    assert grows["pairs"][0]["own_exponent"] == pytest.approx(math.log(700 / 400) / math.log(2))
    assert grows["pairs"][0]["cpu_exponent"] == pytest.approx(1.0)
    assert "GROWS WITH USERS" in bs.report({"runs": runs})
    assert "GROWS WITH USERS" not in bs.report(
        {"runs": {**runs, **{"ml-20m/x0.5/verify-2.5": _rec(2.0, 1250)}}}
    )


def test_force_re_measures_only_the_parts_given(bs, tmp_path):
    """A recorded step is skipped; --force re-measures the steps of --parts only (so
    `--parts verify --force` keeps the checkpoints); a failed step is always re-run."""
    out = tmp_path / "scale.json"
    runs = {"msd/x1/train-pia": {"rc": 0}, "msd/x1/verify-2.3": {"rc": 0}}
    runs["msd/x1/verify-2.4"] = {"rc": 2}
    out.write_text(json.dumps({"runs": runs}))

    def bench(*argv):
        return bs.Bench(bs.parse_args(["--out", str(out), "--work", str(tmp_path), *argv]))

    plain, forced = bench(), bench("--parts", "verify", "--force")
    assert plain.done("msd/x1/train-pia", "train") and plain.done("msd/x1/verify-2.3", "verify")
    assert not plain.done("msd/x1/verify-2.4", "verify")  # failed: run again
    assert forced.done("msd/x1/train-pia", "train")
    assert not forced.done("msd/x1/verify-2.3", "verify")


def test_bad_options_are_usage_errors(bs, capsys):
    for argv in (["--shape", "ml-1m"], ["--size", "0"], ["--claims", "2.7"], ["--parts", "x"]):
        with pytest.raises(SystemExit) as e:
            bs.parse_args(argv)
        assert e.value.code == 2
    assert "unknown claim '2.7'" in capsys.readouterr().err


@pytest.mark.slow
def test_harness_runs_and_resumes_on_a_tiny_shape(bs, tmp_path, capsys):
    """--quick on a tiny shape: prepare at two sizes, then train (3 settings), load and
    one claim at one, each measured in its own process (positive CPU time and peak RSS;
    data and checkpoints in the work folder, not the repo); the two prepare steps give
    exponents; a second run measures nothing again."""
    out, work = tmp_path / "scale.json", tmp_path / "work"
    common = ["--quick", "--shape", "ml-20m", "--work", str(work), "--out", str(out)]
    assert bs.main([*common, "--size", "0.004,0.008", "--parts", "prepare"]) == 0
    argv = [*common, "--size", "0.004", "--claims", "3.1"]
    assert bs.main(argv) == 0
    results = json.loads(out.read_text())
    runs = results["runs"]
    steps = ["prepare", "train-clean", "train-masking", "train-pia", "load", "verify-3.1"]
    assert sorted(runs) == sorted(["ml-20m/x0.008/prepare", *(f"ml-20m/x0.004/{t}" for t in steps)])
    for rec in runs.values():
        assert rec["rc"] in (0, 1, 3, 4) and rec["cpu_s"] > 0 and rec["peak_rss_mb"] > 50
    assert runs["ml-20m/x0.008/prepare"]["counts"]["users"] == round(136_677 * 0.008)
    verdict = runs["ml-20m/x0.004/verify-3.1"]["verdict"]
    assert verdict in ("PASS", "INCONCLUSIVE", "FAIL", "VACUOUS")
    assert (work / "checkpoints" / "ml-20m-x0.004" / "pia.pt").is_file()
    assert results["growth"]["ml-20m/prepare"]["pairs"][0]["sizes"] == [0.004, 0.008]
    before = out.read_text()
    capsys.readouterr()
    assert bs.main(argv) == 0
    assert out.read_text() == before  # every step was recorded: nothing re-measured
    assert "verify-3.1" in capsys.readouterr().out
