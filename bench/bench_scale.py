r"""Scale benchmark: data preparation, training and each claim of ``radius verify`` at the
paper's shapes (MovieLens-20M, Netflix, MSD) and at a quarter, a half and the full size.

For every (shape, size) it runs, each in its own process with one thread
(``OMP_NUM_THREADS=1``), and measures wall time, CPU time (user + sys) and peak resident
memory (``ru_maxrss`` from ``os.wait4`` of that process; it counts at least the
harness's own ~30 MB, which Linux carries into a child at the fork):

- ``prepare``: ``radius data prepare --synthetic SHAPE --synthetic-scale SIZE``;
- ``train-SETTING``: ``radius train --setting SETTING --epochs 1`` for clean, masking and
  pia (the checkpoints the claims are verified with; the verify cost does not depend
  much on the weights, so one epoch is the budget; ``--train-epochs``);
- ``load``: a process that loads the prepared data and the three checkpoints and exits:
  the memory every claim needs before it does anything (the sparse matrices, the
  models, the interpreter and torch);
- ``verify-CLAIM``: ``radius verify --theorem CLAIM --data DATA --checkpoint clean=...
  --checkpoint masking=... --checkpoint pia=...``, one claim per process.

The size multiplies the users and the held-out users; the items stay the shape's
(``radius data prepare --help``). Per step and shape the growth exponent between two
sizes s1 < s2 is :math:`\log(y_2 / y_1) / \log(s_2 / s_1)` for y = CPU time and y = peak
RSS: 1 means linear in users, 0 flat. For a claim, its own memory is its peak RSS minus
the ``load`` step's at the same size; a claim is flagged **grows with users** when,
between two sizes, that memory rises by more than ``FLAG_MB`` (64 MB) *and* its
exponent exceeds ``FLAG_EXPONENT`` (0.25): both thresholds are fixed here, before any
measurement, above the noise of ``ru_maxrss`` on repeated runs (a few MB) and below the
growth the issue reported (T2.5: +2.46 GB from 2.5k to 10k test users).

Everything generated (prepared data, checkpoints, verify JSON, logs) goes under the
work folder (``--work``; default ``$RADIUS_SCALE_DIR`` or ``~/.cache/radius/scale``),
never into the repository; ``rm -rf WORK`` removes it all. Models are cached under
``WORK/models`` (``RADIUS_CACHE_DIR``), so a claim that would train silently shows up
there. Results go to ``--out`` (default ``bench/results/scale.json``), written after
every step; a step already recorded there is skipped unless ``--force``, so the run can
be interrupted, resumed and extended by shape, size, claim and part::

    python bench/bench_scale.py --parts prepare                         # 9 data sets
    python bench/bench_scale.py --shape ml-20m --size 0.25              # train + verify
    python bench/bench_scale.py --shape ml-20m --size 1 --claims 2.3,2.5
    python bench/bench_scale.py --report                                # table only
    python bench/bench_scale.py --report --markdown                     # for bench/README.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("ml-20m", "netflix", "msd")
SIZES = (0.25, 0.5, 1.0)
CLAIMS = ("2.3", "2.4", "2.5", "2.6", "beta-kl", "3.1", "3.2")
SETTINGS = ("clean", "masking", "pia")
PARTS = ("prepare", "train", "verify")
# verify exits 0 PASS, 1 FAIL, 3 INCONCLUSIVE, 4 VACUOUS: results; 2 (bad input) or a crash: not
OK_CODES = (0, 1, 3, 4)
FLAG_MB = 64.0
FLAG_EXPONENT = 0.25
# --quick: a tiny shape and model (tests of this harness)
QUICK = {
    "spec_extra": "items=300,max=150,communities=6",
    "train_args": "--hidden-dims 32 --latent-dim 8 --batch-size 100",
    "verify_args": "--n-pairs 40 --n-users 40 --n-mc 200",
}
LOAD_CODE = (
    "import sys\n"
    "from radius.data.loaders import load_any\n"
    "from radius.training.checkpoints import load_checkpoint\n"
    "ds = load_any(sys.argv[1])\n"
    "models = [load_checkpoint(p, ds).model for p in sys.argv[2:]]\n"
    "print(ds.summary())\n"
)


# --------------------------------------------------------------------------- running
def measure(cmd: list[str], log: Path, *, env: dict[str, str], timeout: float | None) -> dict:
    """Run ``cmd`` (output to ``log``); its exit code, wall and CPU seconds, peak RSS.

    CPU time and peak RSS are the process's own (``os.wait4``), not the harness's; Linux
    carries ``ru_maxrss`` across fork and exec, so the peak is at least the harness's
    resident size at the fork (about 30 MB: it imports no torch), recorded as
    ``harness_rss_mb``. A run past ``timeout`` seconds is killed and recorded with
    ``rc = "timeout"``.
    """
    import resource

    log.parent.mkdir(parents=True, exist_ok=True)
    harness = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    timed_out = timeout is not None and wall > timeout
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": shlex.join(cmd),
        "rc": "timeout" if timed_out else proc.returncode,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "user_s": round(usage.ru_utime, 2),
        "sys_s": round(usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KB on Linux
        "harness_rss_mb": round(harness, 1),
        "load_avg_end": round(os.getloadavg()[0], 2),
        "log": str(log),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def child_env(work: Path) -> dict[str, str]:
    """One thread everywhere; a private model cache inside the work folder."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    env["RADIUS_CACHE_DIR"] = str(work / "models")
    return env


def radius_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "radius.cli", *args]


def size_label(size: float) -> str:
    return f"x{size:g}"


class Bench:
    """The runs of one invocation, recorded in ``out`` after every step."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).expanduser().resolve()
        self.out = Path(args.out)
        self.env = child_env(self.work)
        self.results = json.loads(self.out.read_text()) if self.out.is_file() else {}
        self.results.setdefault("runs", {})
        self.failed: list[str] = []

    # ------------------------------------------------------------------ bookkeeping
    def key(self, shape: str, size: float, step: str) -> str:
        return f"{shape}/{size_label(size)}/{step}"

    def done(self, key: str, part: str) -> bool:
        """Recorded without error, and not to be re-measured (``--force`` re-measures the
        steps of the parts given with ``--parts`` only)."""
        rec = self.results["runs"].get(key)
        forced = self.args.force and part in self.args.parts
        return rec is not None and rec["rc"] in OK_CODES and not forced

    def record(self, key: str, rec: dict[str, Any]) -> None:
        from radius.io import atomic_write_json

        self.results["runs"][key] = rec
        self.results["machine"] = machine()
        self.results["thresholds"] = {"flag_mb": FLAG_MB, "flag_exponent": FLAG_EXPONENT}
        self.results["growth"] = growth(self.results["runs"])
        self.results["work"] = str(self.work)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out, self.results)

    def run(self, key: str, cmd: list[str], *, label: str | None = None, after=None) -> dict:
        """Measure ``cmd``; ``after(rec)`` adds fields (counts, sizes) before it is recorded."""
        print(f"{key}: {label or shlex.join(cmd[2:])}", flush=True)
        log = self.work / "logs" / (key.replace("/", "_") + ".log")
        rec = measure(cmd, log, env=self.env, timeout=self.args.timeout)
        ok = rec["rc"] in OK_CODES
        if ok and after is not None:
            after(rec)
        self.record(key, rec)
        if not ok:
            self.failed.append(key)
        print(
            f"  rc={rec['rc']} wall {rec['wall_s']:.1f} s, CPU {rec['cpu_s']:.1f} s, peak RSS "
            f"{rec['peak_rss_mb']:.0f} MB" + ("" if ok else f"  (log: {rec['log']})"),
            flush=True,
        )
        return rec

    # ------------------------------------------------------------------ paths
    def data_dir(self, shape: str, size: float) -> Path:
        return self.work / "data" / f"{shape}-{size_label(size)}"

    def ckpt(self, shape: str, size: float, setting: str) -> Path:
        return self.work / "checkpoints" / f"{shape}-{size_label(size)}" / f"{setting}.pt"

    def spec(self, shape: str) -> str:
        return ",".join(s for s in (shape, self.args.spec_extra) if s)

    # ------------------------------------------------------------------ steps
    def prepare(self, shape: str, size: float) -> bool:
        key, data = self.key(shape, size, "prepare"), self.data_dir(shape, size)
        if self.done(key, "prepare") and (data / "manifest.json").is_file():
            return True
        cmd = radius_cmd("data", "prepare", "--synthetic", self.spec(shape))
        cmd += ["--synthetic-scale", f"{size:g}", "--out", str(data), "--name", data.name]

        def counts(rec: dict[str, Any]) -> None:
            man = json.loads((data / "manifest.json").read_text())
            rec["counts"] = {
                k: man["counts"][k]
                for k in ("users", "items", "train_users", "val_users", "test_users")
            }
            rec["counts"]["interactions"] = man["counts"]["kept_interactions"]
            rec["hash"] = man["hash"]
            rec["disk_mb"] = round(sum(f.stat().st_size for f in data.iterdir()) / 2**20, 1)

        rec = self.run(key, cmd, after=counts)
        return rec["rc"] == 0

    def train(self, shape: str, size: float) -> bool:
        for setting in SETTINGS:
            key, path = self.key(shape, size, f"train-{setting}"), self.ckpt(shape, size, setting)
            if self.done(key, "train") and path.is_file():
                continue
            cmd = radius_cmd("train", "--data", str(self.data_dir(shape, size)))
            cmd += ["--setting", setting, "--epochs", str(self.args.train_epochs), "--quiet"]
            cmd += ["--device", "cpu", "--out", str(path), *shlex.split(self.args.train_args)]
            rec = self.run(
                key, cmd, after=lambda r, p=path: r.update(checkpoint_mb=_mb(p.stat().st_size))
            )
            if rec["rc"] != 0:
                return False
        return True

    def verify(self, shape: str, size: float) -> None:
        data = str(self.data_dir(shape, size))
        ckpts = [str(self.ckpt(shape, size, s)) for s in SETTINGS]
        key = self.key(shape, size, "load")
        if not self.done(key, "verify"):
            cmd = [sys.executable, "-c", LOAD_CODE, data, *ckpts]
            self.run(key, cmd, label="load the data and the three checkpoints")
        for claim in self.args.claims:
            key = self.key(shape, size, f"verify-{claim}")
            if self.done(key, "verify"):
                continue
            out = self.work / "verify" / f"{shape}-{size_label(size)}"
            cmd = radius_cmd("verify", "--theorem", claim, "--data", data, "--out", str(out))
            for setting, path in zip(SETTINGS, ckpts):
                cmd += ["--checkpoint", f"{setting}={path}"]
            cmd += shlex.split(self.args.verify_args)

            def verdict(rec: dict[str, Any], claim: str = claim, out: Path = out) -> None:
                found = _claim_report(out, claim)
                if found is not None:
                    rec.update(verdict=found.get("verdict"), claim_seconds=found.get("seconds"))

            self.run(key, cmd, after=verdict)

    def main(self) -> int:
        print(f"work folder: {self.work} (data, checkpoints, logs; rm -rf it to clean up)")
        for shape in self.args.shapes:
            for size in self.args.sizes:
                if "prepare" in self.args.parts and not self.prepare(shape, size):
                    continue
                if not (self.data_dir(shape, size) / "manifest.json").is_file():
                    if {"train", "verify"} & set(self.args.parts):
                        print(f"{shape} {size_label(size)}: no prepared data; run --parts prepare")
                    continue
                if "train" in self.args.parts or "verify" in self.args.parts:
                    if not self.train(shape, size):
                        continue
                if "verify" in self.args.parts:
                    self.verify(shape, size)
        print()
        print(report(self.results, markdown=self.args.markdown))
        if self.failed:
            print(f"\nfailed steps (see their logs): {', '.join(self.failed)}")
        print(f"\nresults: {self.out}")
        return 1 if self.failed else 0


def _claim_report(out: Path, claim: str) -> dict[str, Any] | None:
    """The claim's JSON report written by ``radius verify`` (None if absent)."""
    from radius.verify import CLAIMS as NAMES

    path = out / f"{NAMES.get(claim, claim)}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _mb(n_bytes: int) -> float:
    return round(n_bytes / 2**20, 2)


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "threads_per_step": 1,
        "memory_method": "ru_maxrss of each step's own process (os.wait4); at least the "
        "harness's RSS at the fork (harness_rss_mb), which Linux carries into the child",
    }


# --------------------------------------------------------------------------- growth
def exponent(y1: float, y2: float, s1: float, s2: float) -> float | None:
    """log(y2 / y1) / log(s2 / s1); None when a value is not positive."""
    if y1 <= 0 or y2 <= 0 or s1 <= 0 or s2 <= 0 or s1 == s2:
        return None
    return math.log(y2 / y1) / math.log(s2 / s1)


def growth(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``shape/step``: the sizes measured, the CPU-time and peak-RSS exponents between
    consecutive sizes, for claims their own memory (peak minus ``load``) and its exponent,
    and ``grows_with_users`` (see module docstring)."""
    table: dict[str, dict[float, dict[str, Any]]] = {}
    for key, rec in runs.items():
        shape, label, step = key.split("/", 2)
        if rec["rc"] not in OK_CODES:
            continue
        table.setdefault(f"{shape}/{step}", {})[float(label[1:])] = rec
    out: dict[str, dict[str, Any]] = {}
    for row, by_size in sorted(table.items()):
        shape, step = row.split("/", 1)
        sizes = sorted(by_size)
        own = {}
        if step.startswith("verify-"):
            for s in sizes:
                base = runs.get(f"{shape}/{size_label(s)}/load")
                if base is not None and base["rc"] in OK_CODES:
                    own[s] = by_size[s]["peak_rss_mb"] - base["peak_rss_mb"]
        entry: dict[str, Any] = {"sizes": sizes, "pairs": []}
        flagged = False
        for s1, s2 in zip(sizes, sizes[1:]):
            a, b = by_size[s1], by_size[s2]
            pair = {
                "sizes": [s1, s2],
                "cpu_exponent": exponent(a["cpu_s"], b["cpu_s"], s1, s2),
                "wall_exponent": exponent(a["wall_s"], b["wall_s"], s1, s2),
                "rss_exponent": exponent(a["peak_rss_mb"], b["peak_rss_mb"], s1, s2),
            }
            if s1 in own and s2 in own:
                pair["own_mb"] = [round(own[s1], 1), round(own[s2], 1)]
                pair["own_exponent"] = exponent(max(own[s1], 1.0), max(own[s2], 1.0), s1, s2)
                rises = own[s2] - own[s1] > FLAG_MB
                steep = pair["own_exponent"] is not None and pair["own_exponent"] > FLAG_EXPONENT
                pair["grows_with_users"] = bool(rises and steep)
                flagged |= pair["grows_with_users"]
            entry["pairs"].append(pair)
        if step.startswith("verify-"):
            entry["grows_with_users"] = flagged
        out[row] = entry
    return out


# --------------------------------------------------------------------------- report
def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(results: dict[str, Any], *, markdown: bool = False) -> str:
    """One row per shape and step: wall / CPU s / peak MB per size, then exponents."""
    runs, grow = results.get("runs", {}), growth(results.get("runs", {}))
    header = ["shape", "step", "size", "wall s", "CPU s", "peak MB", "own MB"]
    header += ["CPU exp.", "RSS exp.", "own exp.", "note"]
    rows: list[list[str]] = []
    order = ["prepare", *(f"train-{s}" for s in SETTINGS), "load"]
    order += [f"verify-{c}" for c in CLAIMS]
    for shape in SHAPES + tuple(sorted({k.split("/")[0] for k in runs} - set(SHAPES))):
        for step in order:
            g = grow.get(f"{shape}/{step}")
            if g is None:
                continue
            for j, s in enumerate(g["sizes"]):
                rec = runs[f"{shape}/{size_label(s)}/{step}"]
                pair = g["pairs"][j - 1] if j > 0 else {}
                base = runs.get(f"{shape}/{size_label(s)}/load")
                own = None
                if step.startswith("verify-") and base is not None:
                    own = rec["peak_rss_mb"] - base["peak_rss_mb"]
                note = []
                if pair.get("grows_with_users"):
                    note.append("GROWS WITH USERS")
                if rec.get("verdict"):
                    note.append(str(rec["verdict"]))
                if rec.get("checkpoint_mb"):
                    note.append(f"checkpoint {rec['checkpoint_mb']:.3g} MB")
                if rec.get("counts"):
                    c = rec["counts"]
                    note.append(
                        f"{c['users']:,} x {c['items']:,}, {c['interactions']:,} interactions"
                    )
                rows.append(
                    [
                        shape if j == 0 else "",
                        step if j == 0 else "",
                        size_label(s),
                        f"{rec['wall_s']:.1f}",
                        f"{rec['cpu_s']:.1f}",
                        f"{rec['peak_rss_mb']:.0f}",
                        _f(own, 0),
                        _f(pair.get("cpu_exponent")),
                        _f(pair.get("rss_exponent")),
                        _f(pair.get("own_exponent")),
                        "; ".join(note),
                    ]
                )
    if not rows:
        return "(no results yet)"
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(x) for h, x in zip(header, w)), "  ".join("-" * x for x in w)]
    lines += ["  ".join(c.ljust(x) for c, x in zip(r, w)) for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def _list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad[0]!r}; choose from {allowed}")
    return items


def _sizes(text: str) -> list[float]:
    try:
        sizes = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be numbers, got {text!r}") from None
    if not sizes or any(not 0 < s <= 10 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must lie in (0, 10], got {text!r}")
    return sorted(set(sizes))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--shape",
        dest="shapes",
        type=lambda t: _list(t, SHAPES, "shape"),
        default=list(SHAPES),
        help="comma list of ml-20m, netflix, msd",
    )
    ap.add_argument(
        "--size",
        dest="sizes",
        type=_sizes,
        default=list(SIZES),
        help="comma list of fractions of the shape's users (default 0.25,0.5,1)",
    )
    ap.add_argument(
        "--claims",
        type=lambda t: _list(t, CLAIMS, "claim"),
        default=list(CLAIMS),
        help="comma list of " + ", ".join(CLAIMS),
    )
    ap.add_argument(
        "--parts",
        type=lambda t: _list(t, PARTS, "part"),
        default=list(PARTS),
        help="comma list of prepare, train, verify (train and verify prepare "
        "nothing: give prepare too, or run it first)",
    )
    ap.add_argument(
        "--work",
        default=os.environ.get("RADIUS_SCALE_DIR", "~/.cache/radius/scale"),
        help="folder for data, checkpoints, verify JSON and logs (outside the repo)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    ap.add_argument(
        "--force",
        action="store_true",
        help="re-measure the steps of --parts already recorded (checkpoints that exist are "
        "kept unless train is among --parts)",
    )
    ap.add_argument("--train-epochs", dest="train_epochs", type=int, default=1)
    ap.add_argument(
        "--train-args",
        dest="train_args",
        default="",
        help="more `radius train` options, e.g. '--set lr=1e-3'",
    )
    ap.add_argument(
        "--verify-args",
        dest="verify_args",
        default="",
        help="more `radius verify` options, e.g. '--n-pairs 400'",
    )
    ap.add_argument(
        "--spec-extra",
        dest="spec_extra",
        default="",
        help="keys appended to the synthetic spec, e.g. 'seed=1'",
    )
    ap.add_argument("--timeout", type=float, default=None, help="seconds per step (killed after)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny items, model and samples (tests of this harness): " + str(QUICK),
    )
    ap.add_argument("--report", action="store_true", help="print the table of --out; run nothing")
    ap.add_argument("--markdown", action="store_true", help="the table as markdown")
    args = ap.parse_args(argv)
    if args.quick:  # QUICK's values first, then what was given
        args.spec_extra = ",".join(x for x in (QUICK["spec_extra"], args.spec_extra) if x)
        args.train_args = " ".join(x for x in (QUICK["train_args"], args.train_args) if x)
        args.verify_args = " ".join(x for x in (QUICK["verify_args"], args.verify_args) if x)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.report:
        out = Path(args.out)
        results = json.loads(out.read_text()) if out.is_file() else {}
        print(report(results, markdown=args.markdown))
        return 0
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
