"""``radius report``: fills the generated blocks of paper_checks.md, keeps the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radius.cli import main
from radius.errors import RadiusError
from radius.io import atomic_write_json
from radius.report import (
    begin_marker,
    check_structure,
    end_marker,
    generate,
    parse_blocks,
    render_ablation,
    render_claim,
    replace_blocks,
)
from radius.verify import CLAIMS
from radius.verify.base import Check, ClaimResult

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = {
    "dataset": "synthetic",
    "data_hash": "abcdef0123456789",
    "seed": 0,
    "code_version": "0.1.0+gdeadbee",
    "checkpoint": None,
    "base_config": {"latent_dim": 8},
}


def _pass_result() -> ClaimResult:
    return ClaimResult(
        claim="2.6",
        title="Masking law",
        statement="D ~ Bin(d, rho) + Bin(s, 2 rho (1 - rho))",
        reconstruction=True,
        checks=[
            Check(
                "pair_exact_in_mc_ci", "exact inside MC CI", 1.0, 1.0, 0.0, "all inside", True, 96
            ),
            Check(
                "pair_hoeffding_bound", "bound >= exact", 0.031, 0.2, 0.169, "every case", True, 7
            ),
        ],
        method="exact convolution vs Monte Carlo",
        details={
            "n_pairs": 40,
            "max_rel_error": 1.5e-12,
            "pair_rows": [{"d": 1, "s": 2}],
            "hooks": {"bound_scale": 1.0},
            "timings_s": {"total": 3.0},
        },
        context=CONTEXT,
    )


def _fail_result() -> ClaimResult:
    return ClaimResult(
        claim="3.1",
        title="Anchor loss decomposition",
        statement="L_A = ||mu - e||^2 + tr Sigma + spread",
        reconstruction=False,
        checks=[
            Check(
                "closed_form", "closed = direct", 1e-9, 1e-6, 9.99e-7, "rel err <= 1e-6", True, 50
            ),
            Check(
                "gradient | mu", "autograd = 2 (mu - e)", 0.5, 1e-6, -0.5, "abs <= 1e-6", False, 50
            ),
        ],
        details={"summary": {"worst": 0.5}},
        context={**CONTEXT, "seed": 3},
    )


def _write_reports(folder: Path, results: list[ClaimResult]) -> None:
    """As ``radius verify`` writes them: one ``<module>.json`` per claim, plus seconds."""
    for res in results:
        data = res.to_dict()
        data["seconds"] = 1.25
        atomic_write_json(folder / f"{CLAIMS[res.claim]}.json", data)


HAND = """# My checks  \r
Intro with trailing spaces   and unicode: ρ ≤ 1 — “quotes”.

## T2.6 masking (hand-written)
Statement: my words. Mentions `<!-- radius:begin results 2.6 -->` inline, which is no marker.

<!-- radius:begin results 2.6 -->
stale content
<!-- radius:end results 2.6 -->
Between blocks, hand-written.

## P3.1 anchors
<!-- radius:begin results 3.1 -->
<!-- radius:end results 3.1 -->

## 2.3 radius
<!-- radius:begin results 2.3 -->
old
<!-- radius:end results 2.3 -->
<!-- radius:begin custom thing -->
kept as is
<!-- radius:end custom thing -->
trailing text without newline"""


def _outside(text: str) -> list[str]:
    """The text outside every block's content (markers included)."""
    parts, pos = [], 0
    for b in parse_blocks(text):
        parts.append(text[pos : b.start])
        pos = b.end
    parts.append(text[pos:])
    return parts


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    vdir = tmp_path / "runs" / "synthetic" / "verify"
    _write_reports(vdir, [_pass_result(), _fail_result()])
    out = tmp_path / "paper_checks.md"
    out.write_bytes(HAND.encode("utf-8"))
    return {"verify": vdir, "out": out, "figures": tmp_path / "figures" / "out"}


def _gen(inp: dict[str, Path]):
    return generate(inp["out"], verify_dir=inp["verify"], figures_dir=inp["figures"])


def test_fills_markers_from_reports(inputs):
    """PASS and FAIL reports fill their blocks; a claim without a report says so."""
    _gen(inputs)
    text = inputs["out"].read_bytes().decode()
    blocks = {b.key: text[b.start : b.end] for b in parse_blocks(text)}
    b26 = blocks["results 2.6"]
    assert "stale content" not in b26
    assert "**Verdict: PASS** (rests on 2 statement checks: 2 PASS)" in b26
    assert (
        "| `pair_hoeffding_bound` | bound >= exact | bound | 0.031 |  | 0.2 | 0.169 | 7 | "
        "every case | PASS |  |" in b26
    )
    assert "Statement (follows from the claim as proved; only these decide the verdict):" in b26
    assert "`radius verify --theorem 2.6 --set latent_dim=8`" in b26  # non-default config
    assert "abcdef0123456789" in b26 and "seed 0" in b26 and "0.1.0+gdeadbee" in b26
    assert "- `max_rel_error`: 1.5e-12" in b26
    assert "rows" not in b26 and "bound_scale" not in b26 and "timings" not in b26
    assert "`masking` not drawn yet: `radius figures masking`" in b26
    b31 = blocks["results 3.1"]
    assert "**Verdict: FAIL** (rests on 2 statement checks: 1 PASS, 1 FAIL)" in b31
    assert "| `gradient \\| mu` |" in b31  # pipes escaped inside the table
    assert "- `gradient | mu` FAIL (bound, decides the verdict)" in b31
    assert "`radius verify --theorem 3.1 --seed 3 --set latent_dim=8`" in b31
    assert "- `summary.worst`: 0.5" in b31
    assert "not run yet" in blocks["results 2.3"] and "old" not in blocks["results 2.3"]
    assert blocks["custom thing"] == "\nkept as is\n"


def test_keeps_hand_written_text_byte_for_byte(inputs):
    """Every byte outside the blocks' contents (CRLF, unicode, no final newline) is kept."""
    before = inputs["out"].read_bytes().decode()
    _gen(inputs)
    after = inputs["out"].read_bytes().decode()
    outside_before = _outside(before)
    outside_after = _outside(after)
    # claims of CLAIMS missing from the hand-written file are appended at the very end
    k = len(outside_before) - 1
    assert outside_after[:k] == outside_before[:k]
    assert outside_after[k].startswith(outside_before[k])
    assert "\r\n" in after and "ρ ≤ 1 — “quotes”" in after


def test_idempotent(inputs):
    """Running the generator twice gives the same file, and the second run changes nothing."""
    first = _gen(inputs)
    text1 = inputs["out"].read_bytes()
    second = _gen(inputs)
    assert inputs["out"].read_bytes() == text1
    assert first.changed and not second.changed
    assert second.appended == []


def test_missing_claim_sections_are_appended(inputs):
    """A claim of the registry with no block in the file gets a section at the end."""
    summ = _gen(inputs)
    assert summ.appended == [c for c in CLAIMS if c not in ("2.6", "3.1", "2.3")]
    assert summ.unknown == ["custom thing"]
    text = inputs["out"].read_bytes().decode()
    assert check_structure(text) == []


def test_skeleton_when_missing(tmp_path):
    """No file: a skeleton with one section and one block per claim id is generated."""
    out = tmp_path / "paper_checks.md"
    summ = generate(out, verify_dir=tmp_path / "none", figures_dir=tmp_path / "figs")
    text = out.read_text()
    assert summ.created
    assert check_structure(text) == []
    for cid in CLAIMS:
        assert begin_marker(f"results {cid}") in text and end_marker(f"results {cid}") in text
    assert text.count("**Verdict: not run yet.**") == len(CLAIMS)
    assert begin_marker("ablation") in text and begin_marker("figures") in text


def test_skeleton_takes_statements_from_reports(tmp_path):
    """Title, statement and reconstruction label of a claim come from its report."""
    vdir = tmp_path / "verify"
    _write_reports(vdir, [_pass_result()])
    out = tmp_path / "paper_checks.md"
    generate(out, verify_dir=vdir, figures_dir=tmp_path / "figs")
    text = out.read_text()
    assert "## Claim 2.6: Masking law" in text
    assert "- **Statement verified:** D ~ Bin(d, rho) + Bin(s, 2 rho (1 - rho))" in text
    assert "- **Method:** exact convolution vs Monte Carlo" in text


def test_key_numbers_chosen_by_the_claim():
    """details["key_numbers"], when a claim provides it, chooses the key numbers shown."""
    data = _pass_result().to_dict()
    data["details"]["key_numbers"] = {"fraction_inside": 0.995}
    text = render_claim("2.6", data)
    assert "- `fraction_inside`: 0.995" in text and "n_pairs" not in text


def test_unreadable_report_is_said(tmp_path):
    """A corrupt report renders 'report unreadable', not 'not run yet' nor a verdict."""
    vdir = tmp_path / "verify"
    vdir.mkdir()
    (vdir / f"{CLAIMS['2.6']}.json").write_text("{not json")
    out = tmp_path / "p.md"
    summ = generate(out, verify_dir=vdir, figures_dir=tmp_path / "figs")
    assert summ.verdicts["2.6"] == "unreadable"
    assert "**Verdict: report unreadable.**" in out.read_text()


def test_figure_links_relative_to_output(inputs):
    """A drawn figure is linked relative to the output file, with its data files."""
    figs = inputs["figures"]
    figs.mkdir(parents=True)
    for ext in ("png", "csv"):
        (figs / f"masking.{ext}").write_bytes(b"x")
    _gen(inputs)
    text = inputs["out"].read_text()
    assert "![masking](figures/out/masking.png) (data: [csv](figures/out/masking.csv))" in text


def _ablation_json() -> dict:
    """A result in the layout of ``radius.experiments.ablation`` (values made up)."""
    stat = lambda m, s: {"mean": m, "std": s, "se": s / 2, "n": 2, "values": [m - s, m + s]}
    coh = lambda m: {"users": 10, "ndcg@100": {"mean": m, "std": 0.01, "n": 2}}
    return {
        "experiment": "ablation",
        "data": {"name": "synthetic", "hash": "abcdef0123456789"},
        "model": "multvae",
        "seeds": [0, 1],
        "settings": ["clean", "masking", "pia"],
        "metrics": ["ndcg@100", "recall@20"],
        "test_users": 500,
        "summary": {
            s: {"ndcg@100": stat(m, 0.002), "recall@20": stat(m - 0.1, float("nan"))}
            for s, m in (("clean", 0.30), ("masking", 0.32), ("pia", 0.33))
        },
        "cohorts": {s: {"5-10": coh(0.2), "100+": coh(0.4)} for s in ("clean", "masking", "pia")},
        "ordering": {
            "metric": "ndcg@100",
            "order": "clean < masking < pia",
            "holds": True,
            "steps": [
                {
                    "lower": "clean",
                    "higher": "masking",
                    "diff_mean": 0.02,
                    "diff_std": 0.001,
                    "seeds_holding": 2,
                    "n_seeds": 2,
                    "beyond_2se": True,
                }
            ],
        },
        "paper": {"ndcg@100": {"clean": 0.409, "masking": 0.426, "pia": 0.437}},
    }


def test_ablation_table_of_a_legacy_file(tmp_path):
    """A file written before intervals renders its numbers, says it is legacy and draws no
    verdict (no "holds" from point estimates)."""
    vdir = tmp_path / "runs" / "synthetic" / "verify"
    vdir.mkdir(parents=True)
    atomic_write_json(vdir.parent / "ablation-multvae.json", _ablation_json())
    out = tmp_path / "p.md"
    generate(out, verify_dir=vdir, figures_dir=tmp_path / "figs")
    text = out.read_text()
    block = next(text[b.start : b.end] for b in parse_blocks(text) if b.key == "ablation")
    assert "| setting | ndcg@100 | recall@20 |" in block
    assert "| masking | 0.3200 ± 0.0020 | 0.2200 |" in block  # NaN std omitted
    assert "| 100+ | 10 | 0.4000 ± 0.0100 |" in block
    assert "Legacy layout" in block and "(no interval)" in block
    assert "holds" not in block.lower() and "HOLDS" not in block


def _ablation_json_with_verdicts() -> dict:
    """The current layout: verdicts computed by radius.experiments on constructed scores
    (masking - clean HOLDS, pia - masking CONTRADICTED, one control each way)."""
    import numpy as np

    from radius import experiments as ex

    rng = np.random.default_rng(0)
    level = rng.uniform(0.2, 0.5, 400)
    coh = np.repeat(np.arange(4), [100, 100, 100, 100])

    def arm(shift):
        return [{"_per_user": {"ndcg@100": level + shift + rng.normal(0, 0.01, 400)}}] * 2

    runs = {"clean": arm(0.0), "masking": arm(0.02), "pia": arm(0.01)}
    data = _ablation_json()
    kw = {"n_boot": 300}
    lo = ex._per_user(runs["masking"], "ndcg@100")
    data.update(
        statistics={
            "metric": "ndcg@100",
            "level": 0.95,
            "draws": 300,
            "min_users": 20,
            "method": "paired user bootstrap",
            "rule": "HOLDS above 0",
        },
        ordering=ex._ordering(runs, "ndcg@100", ["clean", "masking", "pia"], **kw),
        pia_gain=ex._pia_gain(runs, "ndcg@100", coh, **kw),
        tuning={
            "chosen": {"lambda_a": 1.0, "anchor_init": "normal", "anchor_init_scale": 0.01},
            "knobs": {"lambda_a": "grid", "anchor_init": "grid"},
            "rule": "largest mean validation ndcg@100",
            "metric": "ndcg@100",
            "skipped": None,
            "grid": [
                {
                    "lambda_a": lam,
                    "init": "N(0, 0.01^2)",
                    "chosen": lam == 1.0,
                    "val": {"mean": v, "std": float("nan"), "n": 1, "values": [v]},
                }
                for lam, v in ((0.1, 0.30), (1.0, 0.31), (10.0, 0.29))
            ],
        },
        controls={
            "against": "masking",
            "claim": "the control beats masking",
            "pia": {
                "label": "masking + PIA",
                **ex.compare(lo, ex._per_user(runs["pia"], "ndcg@100"), **kw),
            },
            "rows": {"trace_only": {"label": "trace only", **ex.compare(lo, lo + 0.01, **kw)}},
        },
    )
    return data


def test_ablation_table_with_verdicts(tmp_path):
    """The current layout: each ordering step, cohort gain, "both ends" and control with its
    interval and outcome; the grid curve with the chosen point."""
    data = _ablation_json_with_verdicts()
    data["runs"] = {
        "masking": [
            {"setting": "masking", "seed": 0, "stopped": "cap"},
            {"setting": "masking", "seed": 1, "stopped": "early"},
        ],
        "masking_full_budget": [{"setting": "masking_full_budget", "seed": 0, "stopped": "cap"}],
    }
    text = render_ablation({Path("runs/x/ablation-multvae.json"): data})
    assert "Legacy" not in text
    assert "**Warning:** 1 run(s) hit the epoch cap before early stopping" in text
    assert "masking seed 0." in text
    assert "Ordering clean < masking < pia on ndcg@100: **CONTRADICTED**" in text
    step = data["ordering"]["steps"][0]
    iv = step["interval"]
    assert (
        f"- masking − clean: {iv['estimate']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}] **HOLDS**"
        in text
    )
    assert "- pia − masking: " in text and "**CONTRADICTED** (seeds" in text
    assert "| pia − masking [95% CI] | outcome |" in text
    assert "PIA gain largest at both cohort ends" in text
    assert f"**{data['pia_gain']['both_ends']['verdict']}**" in text
    assert "| 1 | N(0, 0.01^2) | 0.3100 | 1 | **chosen** |" in text
    assert "PIA knobs: λ_A = 1 (grid), anchors N(0, 0.01²) (grid)." in text
    assert "| trace only | +0.0100 [+0.0100, +0.0100] | **HOLDS** |" in text
    assert "95% level, 300 draws" in text


def test_ablation_table_of_a_skipped_grid():
    """A λ_A given with --set shows the grid as skipped, with the reason."""
    data = _ablation_json_with_verdicts()
    data["tuning"].update(
        skipped="every tuned knob was given as is (--set); no grid was evaluated",
        grid=[],
        knobs={"lambda_a": "given", "anchor_init": "given"},
    )
    text = render_ablation({Path("runs/x/ablation-multvae.json"): data})
    assert "Grid skipped: every tuned knob was given as is (--set)" in text
    assert "(given)" in text and "**chosen**" not in text


def test_ablation_unknown_layout_falls_back():
    """An ablation JSON of another shape still renders a table of its per-setting numbers."""
    data = {
        "results": {
            "clean": {"ndcg@100": 0.3, "extra": {"recall@20": 0.2}},
            "pia": {"ndcg@100": 0.31},
        }
    }
    text = render_ablation({Path("runs/x/ablation-multvae.json"): data})
    assert "| results | ndcg@100 | extra.recall@20 |" in text
    assert "| pia | 0.31 | — |" in text


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            "<!-- radius:begin a -->\nx\n",
            "line 1: block 'a' has no end marker (<!-- radius:end a -->)",
        ),
        ("x\n<!-- radius:end a -->\n", "line 2: end marker of 'a' without its begin marker"),
        (
            "<!-- radius:begin a -->\n<!-- radius:begin b -->\n<!-- radius:end b -->\n",
            "line 2: block 'b' begins inside block 'a' (opened at line 1); blocks cannot nest",
        ),
        (
            "<!-- radius:begin a -->\n<!-- radius:end a -->\n<!-- radius:begin a -->\n"
            "<!-- radius:end a -->\n",
            "line 3: block 'a' appears twice (first at line 1)",
        ),
    ],
)
def test_malformed_markers_raise(doc, message):
    """Broken markers are refused with a message naming the line (nothing is written)."""
    with pytest.raises(RadiusError) as e:
        parse_blocks(doc)
    assert str(e.value) == message
    assert check_structure(doc, claim_ids=[]) == [message]


def test_replace_blocks_only_named():
    """Blocks not named in the contents keep their text; named ones get the new lines."""
    doc = (
        "a\n<!-- radius:begin x -->\nold\n<!-- radius:end x -->\n"
        "<!-- radius:begin y -->\nkeep\n<!-- radius:end y -->\n"
    )
    new = replace_blocks(doc, {"x": "new"})
    assert new == doc.replace("old", "new")


def _committed_or_skeleton(tmp_path: Path) -> str:
    path = ROOT / "paper_checks.md"
    if path.is_file():
        return path.read_bytes().decode("utf-8")
    out = tmp_path / "paper_checks.md"
    generate(out, verify_dir=tmp_path / "none", figures_dir=tmp_path / "figs")
    return out.read_bytes().decode("utf-8")


def test_committed_paper_checks_structure(tmp_path):
    """The repo's paper_checks.md (or a fresh skeleton) has a section and a block per claim."""
    text = _committed_or_skeleton(tmp_path)
    assert check_structure(text) == []
    # regenerating it from the same inputs is stable and leaves hand-written text alone
    copy = tmp_path / "copy.md"
    copy.write_bytes(text.encode("utf-8"))
    kw = dict(verify_dir=tmp_path / "empty", figures_dir=tmp_path / "figs")
    generate(copy, **kw)
    once = copy.read_bytes()
    generate(copy, **kw)
    assert copy.read_bytes() == once
    assert _outside(once.decode()) == _outside(text)


def test_structure_negative_controls(tmp_path):
    """The structure check fails a file missing a claim's block or the heading naming it."""
    text = _committed_or_skeleton(tmp_path)
    b = next(b for b in parse_blocks(text) if b.key == "results 2.6")
    no_block = text.replace(begin_marker("results 2.6"), "").replace(end_marker("results 2.6"), "")
    assert check_structure(no_block) == ["claim 2.6: no <!-- radius:begin results 2.6 --> block"]
    region_start = max((o.end for o in parse_blocks(text) if o.end < b.start), default=0)
    marker = text.rindex(begin_marker("results 2.6"), 0, b.start)
    head = text[region_start:marker]
    renamed = text[:region_start] + head.replace("2.6", "2.9") + text[marker:]
    assert check_structure(renamed)[0].startswith("claim 2.6: no heading naming it")


def test_cli_report(tmp_path, monkeypatch, capsys):
    """`radius report` writes the file, prints one verdict line per claim and exits 0."""
    monkeypatch.chdir(tmp_path)
    _write_reports(tmp_path / "runs" / "synthetic" / "verify", [_pass_result(), _fail_result()])
    assert main(["report"]) == 0
    printed = capsys.readouterr().out
    assert "2.6    PASS" in printed.replace("\t", "    ") or "2.6      PASS" in printed
    assert "paper_checks.md: created (skeleton)" in printed
    text = (tmp_path / "paper_checks.md").read_text()
    assert "(report: `runs/synthetic/verify/t2_6.json`)" in text
    assert main(["report"]) == 0
    assert "unchanged" in capsys.readouterr().out
    data = json.loads((tmp_path / "runs/synthetic/verify/p3_1.json").read_text())
    assert data["verdict"] == "FAIL"


def test_data_block_lists_verdicts_of_a_second_dataset(tmp_path):
    """A `data NAME` block shows each claim's verdict for runs/NAME, failed checks named."""
    from radius.report import generate

    runs = tmp_path / "runs"
    main_dir = runs / "synthetic" / "verify"
    other = runs / "ml-100k" / "verify"
    main_dir.mkdir(parents=True)
    other.mkdir(parents=True)
    rep = {
        "claim": "2.6",
        "title": "t",
        "statement": "s",
        "reconstruction": True,
        "verdict": "FAIL",
        "passed": False,
        "method": "m",
        "checks": [
            {
                "name": "ok_check",
                "description": "d",
                "measured": 1.0,
                "bound": 1.0,
                "slack": 0.0,
                "tolerance": "t",
                "passed": True,
                "n": 3,
            },
            {
                "name": "bad_check",
                "description": "d",
                "measured": 2.0,
                "bound": 1.0,
                "slack": -1.0,
                "tolerance": "t",
                "passed": False,
                "n": 3,
            },
        ],
        "details": {},
        "context": {"dataset": "ml-100k", "data_hash": "abc", "seed": 0, "code_version": "0.1.0"},
    }
    import json as _json

    (other / "t2_6.json").write_text(_json.dumps(rep))
    out = tmp_path / "pc.md"
    out.write_text("# x\n\n<!-- radius:begin data ml-100k -->\n<!-- radius:end data ml-100k -->\n")
    generate(out, verify_dir=main_dir, figures_dir=tmp_path / "figs")
    text = out.read_text()
    assert "| 2.6 | **FAIL** | — | 1 PASS, 1 FAIL | `bad_check` FAIL |" in text
    assert "| 2.3 | not run yet |" in text
    assert "hash `abc`" in text
    assert "ablation" not in text.split("radius:begin data ml-100k")[1]  # none there: no stub


def test_data_block_names_every_code_version_and_flags_mixed_data(tmp_path):
    """The data stamp lists every code version of its reports and flags differing data."""
    import json as _json

    main_dir = tmp_path / "runs" / "synthetic" / "verify"
    main_dir.mkdir(parents=True)
    other = tmp_path / "runs" / "ml-100k" / "verify"
    other.mkdir(parents=True)

    def rep(claim, version, data_hash):
        return {
            "claim": claim,
            "title": "t",
            "statement": "s",
            "verdict": "PASS",
            "passed": True,
            "reconstruction": True,
            "method": "m",
            "checks": [],
            "details": {},
            "context": {
                "dataset": "ml-100k",
                "data_hash": data_hash,
                "seed": 0,
                "code_version": version,
            },
        }

    (other / "t2_6.json").write_text(_json.dumps(rep("2.6", "0.1.0+gaaa", "abc")))
    (other / "p3_1.json").write_text(_json.dumps(rep("3.1", "0.1.0+gbbb", "abc")))
    out = tmp_path / "pc.md"
    out.write_text("# x\n\n<!-- radius:begin data ml-100k -->\n<!-- radius:end data ml-100k -->\n")
    generate(out, verify_dir=main_dir, figures_dir=tmp_path / "figs")
    text = out.read_text()
    assert "code `0.1.0+gaaa`, `0.1.0+gbbb`" in text and "hash `abc`)" in text
    assert "different data" not in text
    (other / "p3_1.json").write_text(_json.dumps(rep("3.1", "0.1.0+gbbb", "xyz")))
    generate(out, verify_dir=main_dir, figures_dir=tmp_path / "figs")
    assert "**The reports come from different data (hashes differ).**" in out.read_text()


def test_figures_block_lists_model_subfolders(tmp_path):
    """PNGs in figures/out/recvae/ are listed with the --model command that draws them."""
    from radius.report import render_figures

    figs = tmp_path / "figures" / "out"
    (figs / "recvae").mkdir(parents=True)
    (figs / "tsne.png").write_bytes(b"png")
    (figs / "recvae" / "tsne.png").write_bytes(b"png")
    (figs / "recvae" / "tsne.json").write_text("{}")
    text = render_figures(figs, out_dir=tmp_path)
    assert "| [tsne.png](figures/out/tsne.png) | — | `radius figures tsne` |" in text
    assert (
        "| [recvae/tsne.png](figures/out/recvae/tsne.png) | [tsne.json](figures/out/recvae/"
        "tsne.json) | `radius figures tsne --model recvae` |"
    ) in text


def test_commands_and_stamps_name_a_non_default_config():
    """A report made with --model / --set models says so in its regenerate command."""
    from radius.report.format import _command, _config_flags
    from radius.training.config import TrainConfig

    base = TrainConfig(model="recvae", gamma=0.01, hidden_dims=(64,)).key_dict()
    assert _config_flags(base) == ["--model recvae", "--set hidden_dims=[64]", "--set gamma=0.01"]
    assert _command("2.4", {"dataset": "synthetic", "base_config": base}) == (
        "radius verify --theorem 2.4 --model recvae --set hidden_dims=[64] --set gamma=0.01"
    )
    assert _config_flags(TrainConfig().key_dict()) == [] and _config_flags(None) == []
    std = TrainConfig(model="recvae", recvae_prior="standard").key_dict()
    assert _config_flags(std) == ["--model recvae", "--set recvae_prior=standard"]


def _kinds_result() -> ClaimResult:
    """One check of each kind, an empirical one with an interval, a failing probe and a
    failing identity (which makes the implementation BROKEN)."""
    from radius.stats import Interval, Outcome

    iv = Interval(-0.2, -0.5, 0.1, 0.95, "bootstrap", 40)
    return ClaimResult(
        claim="2.3",
        title="T",
        statement="S",
        reconstruction=True,
        checks=[
            Check("slope", "O(eta^2)", 1.0, 2.0, -0.7, "in [1.7, 2.3]", False, 3, kind="identity"),
            Check("bound_real", "a <= b", 1.0, 0.99, 0.01, "fraction", True, 80),
            Check(
                "decay",
                "rho < 0",
                -0.2,
                0.0,
                -0.1,
                "interval",
                False,
                40,
                kind="empirical",
                outcome=Outcome.INCONCLUSIVE,
                interval=iv,
                note="the interval contains 0",
            ),
            Check(
                "bound[probe]", "a <= b", 0.5, 0.99, -0.49, "fraction", False, 9, evidence="probe"
            ),
        ],
        context=CONTEXT,
    )


def test_claim_block_groups_by_role_and_lists_every_failing_sub_check():
    """Statement, then implementation tables; the empirical row shows its interval,
    outcome word and note; the failing identity and probe are listed although they do
    not decide, and the implementation is BROKEN."""
    from radius.report import render_claim

    md = render_claim("2.3", _kinds_result().to_dict())
    i_st = md.index("Statement (follows from the claim")
    i_im = md.index("Implementation (identities and constructed probes")
    assert i_st < i_im
    assert "**Verdict: FAIL; an implementation check failed" in md
    assert "(rests on 2 statement checks: 1 PASS, 1 INCONCLUSIVE)" in md
    assert "- Implementation: **BROKEN**" in md and "- Assumptions: **none**" in md
    assert "-0.2 [-0.5, +0.1] (95%)" in md and "the interval contains 0" in md
    assert "| INCONCLUSIVE |" in md.replace("**INCONCLUSIVE**", "INCONCLUSIVE")
    assert "- `slope` FAIL (identity, implementation: does not decide)" in md
    assert "- `bound[probe]` FAIL (bound, implementation: does not decide)" in md
    assert "- `decay` INCONCLUSIVE (empirical, decides the verdict); the interval contains 0" in md


def test_power_block_renders_rows_and_handles_absence(tmp_path):
    """A power block lists grades and the mildest flip ('cannot fail here' otherwise);
    without power JSON it says 'not run' with the command."""
    import json as _json

    from radius.report import render_power
    from radius.verify.base import PowerRow

    data = tmp_path / "runs" / "ml-100k"
    (data / "verify").mkdir(parents=True)
    md = render_power(data)
    assert "**Power table: not run.**" in md
    assert "radius verify --theorem all --power --data ml-100k" in md
    rows = [
        PowerRow.from_grades(
            "transfer_bound",
            "bound",
            "L_thz scaled",
            "PASS",
            [("x0.9", "PASS", 1.0), ("x0.1", "FAIL", 0.4)],
        ),
        PowerRow.from_grades("decay", "empirical", "W2 permuted", "PASS", [("100%", "PASS", -0.3)]),
    ]
    (data / "verify" / "power").mkdir()
    (data / "verify" / "power" / "t2_3.json").write_text(
        _json.dumps({"claim": "2.3", "rows": [r.to_dict() for r in rows], "note": ""})
    )
    (data / "verify" / "power" / "p3_1.json").write_text(
        _json.dumps({"claim": "3.1", "rows": [], "note": "identities only"})
    )
    md = render_power(data)
    assert (
        "| 2.3 | `transfer_bound` | bound | L_thz scaled | PASS | x0.9 PASS, x0.1 FAIL | "
        "flips at x0.1 |" in md
    )
    assert "**cannot fail here**" in md
    assert "- 3.1: identities only" in md and "- 2.6: not run with `--power`" in md
