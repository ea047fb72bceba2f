"""The command line: exit codes, messages naming the problem, JSON beside every table."""

from __future__ import annotations

import json

import pytest

from radius.cli import main
from radius.verify.base import Check, ClaimResult


@pytest.fixture(scope="module")
def tiny_dir(tiny_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny"
    tiny_dataset.save(path)
    return path


def test_unknown_theorem_is_a_usage_error_with_suggestions(capsys):
    """An unknown claim id exits 2 and suggests the close ones."""
    assert main(["verify", "--theorem", "2.7"]) == 2
    err = capsys.readouterr().err
    assert "unknown theorem '2.7'" in err and "did you mean '2.6'" in err


def test_unknown_command_suggests_close_match(capsys):
    """A misspelt command exits 2 with a suggestion."""
    with pytest.raises(SystemExit) as e:
        main(["trian"])
    assert e.value.code == 2
    assert "did you mean 'train'" in capsys.readouterr().err


def test_bad_data_file_names_file_and_line(tmp_path, capsys):
    """A malformed line in a data file exits 2 with the file, line number and value."""
    bad = tmp_path / "u.data"
    bad.write_text("1\t2\t5\t100\n1\t3\t4\n")
    assert main(["data", "info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "u.data:2" in err and "found 3" in err


def test_data_info_on_prepared_folder(tiny_dir, tmp_path, capsys):
    """`data info` prints the summary and writes it as JSON."""
    out = tmp_path / "info.json"
    assert main(["data", "info", str(tiny_dir), "--json", str(out)]) == 0
    assert "train_users" in capsys.readouterr().out
    assert json.loads(out.read_text())["summary"]["items"] == 300


def test_verify_writes_json_and_exits_zero_when_claim_holds(tiny_dir, tmp_path, capsys):
    """`verify --theorem 2.6` prints a table, writes the JSON report and exits 0 on PASS."""
    args = [
        "verify",
        "--theorem",
        "2.6",
        "--data",
        str(tiny_dir),
        "--n-pairs",
        "40",
        "--n-users",
        "10",
        "--n-mc",
        "300",
        "--out",
        str(tmp_path),
    ]
    rc = main(args)
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "t2_6.json").read_text())
    assert rc == 0 and report["passed"]
    assert report["verdict"] == "PASS" and "HOLDS" in out
    assert "2.6 verdict PASS (statement:" in out and "implementation: verified" in out
    assert report["implementation"] == "verified"
    assert report["context"]["data_hash"]


def test_verify_exits_one_when_a_claim_fails(tiny_dir, tmp_path, monkeypatch):
    """Exit code 1 when a verified claim fails (the exit code tells the truth)."""
    import radius.verify.t2_6 as mod

    def failing(ctx):
        chk = Check("c", "x <= b", 2.0, 1.0, -1.0, "x <= b", False, 1)
        return ClaimResult("2.6", "t", "s", True, [chk])

    monkeypatch.setattr(mod, "run", failing)
    assert (
        main(["verify", "--theorem", "2.6", "--data", str(tiny_dir), "--out", str(tmp_path)]) == 1
    )
    assert json.loads((tmp_path / "t2_6.json").read_text())["verdict"] == "FAIL"


def _fake_result():
    """A claim with one check of each kind: identity PASS, bound PASS, empirical
    INCONCLUSIVE (interval spanning 0), and a failing probe that must not decide."""
    from radius.stats import Interval, Outcome

    iv = Interval(-0.1, -0.4, 0.2, 0.95, "bootstrap", 30)
    checks = [
        Check(
            "emp",
            "rho < 0",
            -0.1,
            0.0,
            0.1,
            "interval",
            False,
            30,
            kind="empirical",
            outcome=Outcome.INCONCLUSIVE,
            interval=iv,
            note="the interval contains 0",
        ),
        Check("bnd", "a <= b", 1.0, 0.99, 0.01, "fraction", True, 40, kind="bound"),
        Check("ident", "x == y", 0.0, 1e-9, 1e-9, "rtol", True, 5, kind="identity"),
        Check("bnd[probe]", "a <= b", 1.0, 0.99, 0.01, "fraction", True, 9, evidence="probe"),
    ]
    return ClaimResult("2.6", "t", "s", True, checks)


def test_verify_exits_three_when_inconclusive_and_groups_by_kind(
    tiny_dir, tmp_path, monkeypatch, capsys
):
    """An INCONCLUSIVE claim exits 3; checks print grouped by role (statement, then
    implementation), with the empirical outcome, its interval and note, the verdict line
    and the assumptions / mechanism / implementation line."""
    import radius.verify.t2_6 as mod

    monkeypatch.setattr(mod, "run", lambda ctx: _fake_result())
    args = ["verify", "--theorem", "2.6", "--data", str(tiny_dir), "--out", str(tmp_path)]
    assert main(args) == 3
    out = capsys.readouterr().out
    i_st, i_im = (out.index(h) for h in ("statement (follows", "implementation (identities"))
    assert i_st < i_im
    assert "INCONCLUSIVE" in out and "-0.1 [-0.4, +0.2]" in out and "the interval contains 0" in out
    assert "2.6 verdict INCONCLUSIVE (statement: 1 INCONCLUSIVE, 1 PASS)" in out
    assert "implementation: verified" in out
    assert "3 INCONCLUSIVE" in out and "4 VACUOUS" in out  # the exit codes are printed
    data = json.loads((tmp_path / "t2_6.json").read_text())
    assert data["verdict"] == "INCONCLUSIVE" and data["implementation"] == "verified"
    emp = next(c for c in data["checks"] if c["name"] == "emp")
    assert emp["kind"] == "empirical" and emp["interval"]["low"] == -0.4
    assert data["checks_by_kind"] == {
        "identity": ["ident"],
        "bound": ["bnd", "bnd[probe]"],
        "empirical": ["emp"],
    }
    assert data["deciding_checks"] == ["emp", "bnd"]
    assert data["checks_by_role"] == {
        "statement": ["emp", "bnd"],
        "assumption": [],
        "mechanism": [],
        "implementation": ["ident", "bnd[probe]"],
    }


def test_verify_failing_probe_does_not_decide_but_breaks_implementation(
    tiny_dir, tmp_path, monkeypatch, capsys
):
    """A failing probe check leaves the real verdict alone but reports the implementation
    BROKEN, which makes the claim FAIL (exit 1)."""
    import radius.verify.t2_6 as mod
    from radius.stats import Outcome

    def broken(ctx):
        res = _fake_result()
        res.checks[-1] = Check(
            "bnd[probe]", "a <= b", 0.5, 0.99, -0.49, "f", False, 9, evidence="probe"
        )
        res.checks[0] = Check("emp", "rho < 0", -0.5, 0.0, 0.5, "i", True, 30, kind="empirical")
        return res

    monkeypatch.setattr(mod, "run", broken)
    args = ["verify", "--theorem", "2.6", "--data", str(tiny_dir), "--out", str(tmp_path)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "implementation: BROKEN" in out and "HOLDS" in out
    assert "an implementation check failed" in out
    assert broken(None).outcome is Outcome.FAIL


def test_verify_power_prints_table_and_writes_json(tiny_dir, tmp_path, monkeypatch, capsys):
    """--power calls each module's power(ctx), prints grades and the mildest flip (or
    "cannot fail here"), writes OUT/power/<module>.json; identity-only claims say so."""
    import radius.verify.p3_1 as p31
    import radius.verify.t2_6 as mod
    from radius.verify.base import PowerRow

    rows = [
        PowerRow.from_grades(
            "bnd",
            "bound",
            "constant scaled",
            "PASS",
            [("x0.9", "PASS", 1.0), ("x0.5", "FAIL", 0.8)],
        ),
        PowerRow.from_grades(
            "emp", "empirical", "shuffled", "INCONCLUSIVE", [("50%", "INCONCLUSIVE", 0.0)]
        ),
    ]
    monkeypatch.setattr(mod, "run", lambda ctx: _fake_result())
    monkeypatch.setattr(mod, "power", lambda ctx: rows, raising=False)
    identity_only = ClaimResult(
        "3.1", "t", "s", False, [Check("i", "x", 0.0, 1.0, 1.0, "t", True, 3, kind="identity")]
    )
    monkeypatch.setattr(p31, "run", lambda ctx: identity_only)
    args = ["verify", "--theorem", "2.6,3.1", "--data", str(tiny_dir), "--out", str(tmp_path)]
    assert main([*args, "--power"]) == 3
    out = capsys.readouterr().out
    assert "x0.9 PASS, x0.5 FAIL" in out and "flips at x0.5" in out
    assert "cannot fail here" in out and "identities only" in out
    data = json.loads((tmp_path / "power" / "t2_6.json").read_text())
    assert [r["flips_at"] for r in data["rows"]] == ["x0.5", None]
    assert data["rows"][1]["label"] == "cannot fail here"
    p = json.loads((tmp_path / "power" / "p3_1.json").read_text())
    assert p["rows"] == [] and "identities only" in p["note"]


def test_train_then_eval_prints_cohort_table(tiny_dir, tmp_path, capsys):
    """`train` writes a checkpoint and metrics JSON; `eval` on it prints the cohort table."""
    ckpt = tmp_path / "m.pt"
    rc = main(
        [
            "train",
            "--data",
            str(tiny_dir),
            "--epochs",
            "2",
            "--hidden-dims",
            "16",
            "--latent-dim",
            "4",
            "--batch-size",
            "100",
            "--out",
            str(ckpt),
            "--quiet",
        ]
    )
    assert rc == 0 and ckpt.is_file()
    metrics = json.loads(ckpt.with_suffix(".json").read_text())
    assert 0 <= metrics["test"]["means"]["ndcg@100"] <= 1
    capsys.readouterr()
    out_json = tmp_path / "eval.json"
    assert (
        main(["eval", "--data", str(tiny_dir), "--checkpoint", str(ckpt), "--json", str(out_json)])
        == 0
    )
    out = capsys.readouterr().out
    assert "5-10" in out and "100+" in out and "ndcg@100" in out
    assert json.loads(out_json.read_text())["means"] == metrics["test"]["means"]


def test_eval_refuses_checkpoint_of_other_data(tiny_dir, tmp_path, capsys):
    """A checkpoint trained on other data exits 2 and names both datasets' hashes."""
    from radius.data.synthetic import SyntheticParams, default_dataset

    other = tmp_path / "other"
    default_dataset(SyntheticParams(n_users=300, n_items=120, n_communities=4, n_max=100)).save(
        other
    )
    ckpt = tmp_path / "m.pt"
    assert (
        main(
            [
                "train",
                "--data",
                str(other),
                "--epochs",
                "1",
                "--hidden-dims",
                "8",
                "--latent-dim",
                "2",
                "--out",
                str(ckpt),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["eval", "--data", str(tiny_dir), "--checkpoint", str(ckpt)]) == 2
    assert "checkpoint was trained on data" in capsys.readouterr().err


def test_bad_config_value_exits_two(tiny_dir, capsys):
    """An out-of-range option is refused with exit 2 and the offending value."""
    assert main(["train", "--data", str(tiny_dir), "--keep-rate", "1.5", "--quiet"]) == 2
    assert "keep_rate (rho) must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_verify_set_overrides_the_base_config(tiny_dir, tmp_path, capsys):
    """`verify --set k=v` trains/uses models of that config (recorded in the JSON); an
    unknown field exits 2 naming it."""
    args = ["verify", "--theorem", "2.6", "--data", str(tiny_dir), "--n-pairs", "20"]
    args += ["--n-users", "10", "--n-mc", "300", "--out", str(tmp_path)]
    assert main([*args, "--set", "latent_dim=7", "--set", "gamma=0.01"]) in (0, 1)
    base = json.loads((tmp_path / "t2_6.json").read_text())["context"]["base_config"]
    assert base["latent_dim"] == 7 and base["gamma"] == 0.01
    assert main([*args, "--set", "latnt_dim=7"]) == 2
    assert "unknown config field(s) ['latnt_dim']" in capsys.readouterr().err
