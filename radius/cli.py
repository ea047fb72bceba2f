"""The ``radius`` command line.

Every command works with no arguments on the embedded synthetic default, prints a
readable table, writes machine-readable JSON beside it, and exits 0 on success,
1 when a verified claim fails, 2 on bad input (with a message naming the problem), and
(``verify``) 3 when a claim is INCONCLUSIVE (its evidence could not decide it) and 4 when
a claim is VACUOUS (its premise holds for no real case).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from pathlib import Path
from typing import Any

from radius.errors import RadiusError

__all__ = ["main"]

RUNS = Path("runs")


# --------------------------------------------------------------------------- helpers
def _table(rows: list[list[Any]], header: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.3g}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def _load_data(spec: str):
    from radius.data.loaders import load_any

    return load_any(spec)


def _parse_set(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` overrides; values parsed as JSON when possible."""
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise RadiusError(f"--set expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _config_from_args(args: argparse.Namespace):
    from radius.training.config import TrainConfig, setting_config

    base = TrainConfig()
    over: dict[str, Any] = {}
    for name in (
        "model",
        "epochs",
        "keep_rate",
        "beta_cap",
        "lambda_a",
        "seed",
        "device",
        "latent_dim",
        "batch_size",
        "lr",
        "patience",
    ):
        v = getattr(args, name, None)
        if v is not None:
            over[name] = v
    if getattr(args, "hidden_dims", None):
        over["hidden_dims"] = tuple(int(h) for h in args.hidden_dims.split(","))
    over.update(_parse_set(getattr(args, "set", None)))
    return setting_config(args.setting, base, **over)


def _metrics_table(res: dict[str, Any]) -> str:
    means = res["means"]
    names = list(means)
    rows = [["all", res["n_users"], *[means[n] for n in names]]]
    for label, c in res["cohorts"].items():
        rows.append([label, c["users"], *[c.get(n, float("nan")) for n in names]])
    return _table(rows, ["cohort", "users", *names])


# --------------------------------------------------------------------------- commands
def _split_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The split parameters given on the ``data prepare`` command line (SplitParams fields)."""
    out: dict[str, Any] = {}
    if args.min_rating is not None:
        out.update(threshold=args.min_rating, inclusive=True)
    elif args.rating_above is not None:
        out.update(threshold=args.rating_above, inclusive=False)
    elif args.all_ratings:
        out["threshold"] = None
    if args.heldout_users is not None:
        kind, value = args.heldout_users
        out["n_heldout" if kind == "count" else "heldout_frac"] = value
    for name in ("min_user", "min_item", "test_prop", "min_heldout_items"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    if args.split_seed is not None:
        out["seed"] = args.split_seed
    if getattr(args, "protocol", None) is not None:
        out["protocol"] = args.protocol
    if getattr(args, "val_prop", None) is not None:
        out["val_prop"] = args.val_prop
    return out


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from radius.data.loaders import prepare
    from radius.data.synthetic import default_dataset

    split = _split_overrides(args)
    if args.synthetic is not None or args.synthetic_scale is not None:
        return _prepare_synthetic(args, split)
    if args.path in (None, "default", "synthetic"):
        out = Path(args.out or RUNS / "data" / "synthetic")
        ds = default_dataset(overrides=split)
        ds.save(out)
    else:
        out = Path(args.out or RUNS / "data" / Path(args.path).stem)
        ds = prepare(args.path, out, fmt=args.format, name=args.name, split=split)
    print(_table([[k, v] for k, v in ds.summary().items()], ["field", "value"]))
    print()
    print(_split_table(ds.manifest))
    print(f"\nprepared dataset written to {out}/ (manifest.json + CSR .npz)")
    return 0


# --------------------------------------------------------- data prepare --synthetic
def _add_synthetic_options(p: argparse.ArgumentParser) -> None:
    """``--synthetic SPEC`` and ``--synthetic-scale S`` of ``data prepare``."""
    from dataclasses import fields

    from radius.data.synthetic import PRESETS, SPEC_ALIASES, SyntheticParams

    g = p.add_argument_group("synthetic data of any size (instead of a path)")
    g.add_argument(
        "--synthetic",
        metavar="SPEC",
        help="[PRESET][,KEY=VALUE...]: presets "
        + ", ".join(
            f"{k} ({v.params.n_users:,} x {v.params.n_items:,})" for k, v in PRESETS.items()
        )
        + "; presets hold out the paper's users (10k, 40k, 50k per split). KEY: a "
        "SyntheticParams field ("
        + ", ".join(f.name for f in fields(SyntheticParams))
        + ") or "
        + ", ".join(f"{a}={f}" for a, f in SPEC_ALIASES.items())
        + ". E.g. 'ml-20m,seed=1' or 'users=50000,items=8000,median=40'. Same seed, same "
        "output. Sets other than 'default' draw with sampler=sparse (cost ~ interactions; "
        "sampler=gumbel: the default's, cost users x items)",
    )
    g.add_argument(
        "--synthetic-scale",
        type=_arg_real,
        metavar="S",
        help="multiply the users and held-out users (not the items) by S, e.g. 0.25",
    )


def _prepare_synthetic(args: argparse.Namespace, split: dict[str, Any]) -> int:
    from radius.data.synthetic import synthetic_dataset

    if args.path is not None or args.format != "auto":
        raise RadiusError("--synthetic builds its own data: give no path and no --format")
    spec = args.synthetic if args.synthetic is not None else "default"
    scale = args.synthetic_scale if args.synthetic_scale is not None else 1.0
    ds = synthetic_dataset(spec, scale=scale, overrides=split)
    if args.name:
        ds.manifest["name"] = args.name
    out = Path(args.out or RUNS / "data" / ds.name)
    ds.save(out)
    params = ds.manifest["source"]["params"]
    print(_table([[k, v] for k, v in {**ds.summary(), **params}.items()], ["field", "value"]))
    print()
    print(_split_table(ds.manifest))
    print(f"\nprepared dataset written to {out}/ (manifest.json + CSR .npz)")
    return 0


def _split_table(manifest: dict[str, Any]) -> str:
    """The split parameters of a manifest with their origin (given / default of FORMAT)."""
    from radius.data.split import params_origin_rows

    rows = [[k, str(v), src] for k, v, src in params_origin_rows(manifest)]
    counts = manifest.get("counts") or {}
    if "heldout_per_split" in counts:
        rows.append(["(held-out users used)", counts["heldout_per_split"], counts["heldout_rule"]])
    return _table(rows, ["split parameter", "value", "origin"])


def cmd_data_info(args: argparse.Namespace) -> int:
    ds = _load_data(args.path or "default")
    summ = ds.summary()
    print(_table([[k, v] for k, v in summ.items()], ["field", "value"]))
    if ds.manifest.get("params"):
        print()
        print(_split_table(ds.manifest))
    if args.json:
        from radius.io import atomic_write_json

        atomic_write_json(
            args.json,
            {
                "summary": summ,
                "manifest_counts": ds.manifest.get("counts"),
                "params": ds.manifest.get("params"),
                "params_origin": ds.manifest.get("params_origin"),
            },
        )
    return 0


def cmd_data_fetch_ml100k(args: argparse.Namespace) -> int:
    from radius.data.ml100k import extract_ml100k, fetch_ml100k_wheel

    wheel = fetch_ml100k_wheel(Path(args.dest))
    out = extract_ml100k(wheel, Path(args.dest) / "ml-100k.inter")
    print(f"MovieLens-100k extracted to {out} (from {wheel.name})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from radius.io import atomic_write_json
    from radius.training.distributed import dist_info
    from radius.training.trainer import train

    ds = _load_data(args.data)
    config = _config_from_args(args)
    out = Path(args.out or RUNS / ds.name / f"{config.model}-{args.setting}-seed{config.seed}.pt")
    info = dist_info()  # under torchrun: rank 0 prints and writes, every rank trains
    if info.is_main:
        print(
            f"training {config.model} ({args.setting}: keep_rate={config.keep_rate}, "
            f"lambda_a={config.lambda_a}, beta_cap={config.beta_cap}) on {ds.name} "
            f"[{ds.hash}] -> {out}"
            + (f" on {info.world_size} processes (DDP)" if info.enabled else "")
        )
    t0 = time.perf_counter()
    try:
        res = train(ds, config, checkpoint=out, resume=args.resume, progress=not args.quiet)
    finally:
        _leave_process_group()
    secs = time.perf_counter() - t0
    if not info.is_main:
        return 0
    stopped = res.meta.get("stopped")
    how = {"early": "stopped early (patience ran out)", "cap": "hit the epoch cap"}.get(
        stopped, "paused"
    )
    print(
        f"\nbest epoch {res.meta['best_epoch']} of {len(res.history)}; {how}; "
        f"input convention {config.input_convention}; {secs:.1f} s"
    )
    for note in res.meta.get("warnings", []):
        print(f"WARNING: {note}")
    print("\ntest users (strong generalisation):")
    print(_metrics_table(res.test))
    report = {
        "checkpoint": str(out),
        "config": config.key_dict(),
        "data": ds.summary(),
        "seconds": secs,
        "val": res.val,
        "test": res.test,
        "world_size": info.world_size,
        **res.meta,
    }
    atomic_write_json(out.with_suffix(".json"), report)
    print(f"\nmetrics JSON: {out.with_suffix('.json')}")
    return 0


def _leave_process_group() -> None:
    """Destroy the torch.distributed process group if training joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_eval(args: argparse.Namespace) -> int:
    from radius.io import atomic_write_json
    from radius.training.checkpoints import load_checkpoint
    from radius.training.metrics import evaluate

    ds = _load_data(args.data)
    if args.checkpoint is None:
        from radius.training.cache import default_cache_dir, get_model
        from radius.training.config import setting_config

        config = setting_config(args.setting)
        model = get_model(ds, config, cache_dir=default_cache_dir(), progress=True)
        source = f"cached {args.setting} model"
    else:
        model = load_checkpoint(args.checkpoint, ds).model
        source = str(args.checkpoint)
    fold_in, heldout = ds.heldout(args.split)
    res = evaluate(model, fold_in, heldout, progress=True).to_dict()
    print(f"{args.split} users of {ds.name} [{ds.hash}], model: {source}")
    print(_metrics_table(res))
    out = Path(args.json or RUNS / ds.name / f"eval-{args.split}.json")
    atomic_write_json(out, {"data": ds.summary(), "model": source, "split": args.split, **res})
    print(f"\nmetrics JSON: {out}")
    return 0


def _short(v: Any) -> str:
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _power_json(cid: str, mod: Any, rows: list[Any] | None, note: str) -> dict[str, Any]:
    return {
        "claim": cid,
        "title": getattr(mod, "TITLE", ""),
        "rows": [r.to_dict() for r in rows or []],
        "note": note,
    }


# ---------------------------------------------------------------- verify: the beta sweep (beta-KL)
def _arg_betas(text: str) -> tuple[float, ...]:
    """``0.1,1,8`` (argparse type): distinct finite betas >= 0; ``none`` for no sweep."""
    if text.strip().lower() == "none":
        return ()
    out = []
    for part in text.split(","):
        v = _arg_real(part.strip())
        if v < 0:
            raise argparse.ArgumentTypeError(f"betas must be >= 0, got {part.strip()}")
        out.append(v)
    if len(set(out)) < 2:
        raise argparse.ArgumentTypeError(f"give at least 2 distinct betas, got {text!r}")
    return tuple(out)


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    """The beta-KL sweep's options of ``radius verify`` (claim options of ``beta-kl``)."""
    g = p.add_argument_group("beta sweep (--theorem beta-kl)")
    g.add_argument(
        "--sweep-betas",
        dest="sweep_betas",
        type=_arg_betas,
        metavar="B1,B2,...",
        help="KL weights of the sweep (default 0.1,0.25,0.5,1,2,4,8,16; 'none': no sweep)",
    )
    g.add_argument(
        "--sweep-epochs",
        dest="sweep_epochs",
        type=_arg_count(1),
        help="epochs of each sweep model (default 4 warm, 20 scratch)",
    )
    g.add_argument(
        "--sweep-users",
        dest="sweep_users",
        type=_arg_count(2),
        help="training users of each sweep model (default 2000 warm, all scratch)",
    )
    g.add_argument(
        "--sweep-seeds",
        dest="sweep_seeds",
        type=_arg_count(1),
        help="training seeds per beta (default min(2, --seeds))",
    )
    g.add_argument(
        "--sweep-start",
        dest="sweep_start",
        choices=["warm", "scratch"],
        default="warm",
        help="fine-tune the masking model at each beta (warm, "
        "default) or train every sweep model from scratch",
    )
    g.add_argument(
        "--sweep-checkpoint",
        dest="sweep_checkpoint",
        action="append",
        metavar="BETA=PATH",
        help="the sweep's model at BETA (repeat a BETA for "
        "one model per seed; --model-factory builds non-radius checkpoints)",
    )


def _sweep_claim_options(args: argparse.Namespace, ds: Any) -> dict[str, dict[str, Any]]:
    """``{"beta-kl": {...}}``: the sweep options given on the command line."""
    from radius.verify.beta_kl import load_sweep_checkpoints

    opts: dict[str, Any] = {
        k: v
        for k, v in (
            ("betas", getattr(args, "sweep_betas", None)),
            ("sweep_epochs", getattr(args, "sweep_epochs", None)),
            ("sweep_users", getattr(args, "sweep_users", None)),
            ("sweep_seeds", getattr(args, "sweep_seeds", None)),
            ("workers", getattr(args, "workers", None)),
        )
        if v is not None
    }
    opts["sweep_start"] = getattr(args, "sweep_start", None) or "warm"
    if getattr(args, "sweep_checkpoint", None):
        opts["sweep_models"] = load_sweep_checkpoints(
            args.sweep_checkpoint, ds, factory=args.model_factory
        )
    return {"beta-kl": opts}


def cmd_verify(args: argparse.Namespace) -> int:
    from radius.io import atomic_write_json
    from radius.stats import combine, exit_code
    from radius.training.cache import default_cache_dir
    from radius.verify import CLAIMS, claim_module, resolve_ids
    from radius.verify.api import run_claim
    from radius.verify.context import MissingModelError, VerifyContext
    from radius.verify.render import EXIT_LEGEND, LEGEND, claim_block, power_table, summary_table

    ids = resolve_ids(args.theorem)
    ds, user, base, per_setting = _verify_inputs(args)
    opts = {
        k: getattr(args, k)
        for k in ("seed", "n_pairs", "n_users", "n_mc", "confidence", "min_fraction", "seeds")
        if getattr(args, k, None) is not None
    }
    claim_opts = _sweep_claim_options(args, ds)
    options = _verify_options(args, opts)
    if user is not None:
        from radius.verify.api import _context

        ctx = _context(
            ds, user, None, options, base, default_cache_dir(), True, setting_overrides=None
        )
    else:
        ctx = VerifyContext(
            dataset=ds,
            options=options,
            base_config=base,
            cache_dir=default_cache_dir(),
            progress=True,
            models=None,
            setting_overrides=per_setting,
        )
    out_dir = Path(args.out or RUNS / ds.name / "verify")
    # every model the claims will use, trained up front in parallel (one thread each)
    needed = []
    for cid in ids:
        fn = getattr(claim_module(cid), "models_needed", None)
        if fn is not None:
            needed += list(fn(ctx, **claim_opts[cid]) if cid in claim_opts else fn(ctx))
    ctx.prefetch(needed, workers=getattr(args, "workers", None))
    results, tables, power_rows = {}, [], []
    for cid in ids:
        mod = claim_module(cid)
        t0 = time.perf_counter()
        print(f"verifying {cid}: {mod.TITLE} ...", flush=True)
        res = run_claim(cid, ctx, claim_opts.get(cid))
        secs = time.perf_counter() - t0
        res.details.setdefault("seconds", secs)
        data = res.to_dict()
        data["seconds"] = secs
        atomic_write_json(out_dir / f"{CLAIMS[cid]}.json", data)
        print(f"  {cid}: {res.verdict_text} ({secs:.1f} s)")
        if res.details.get("not_run"):
            print(f"  {cid} not run: {res.details['not_run']}")
        tables.append(claim_block(res))
        results[cid] = res
        if getattr(args, "power", False):
            power_fn = getattr(mod, "power", None)
            has_graded = any(c.kind != "identity" for c in res.checks)
            if not has_graded:
                rows, note = [], "identities only: no bound or empirical check to perturb"
            elif power_fn is None:
                rows, note = [], "no power() in this claim module yet"
            else:
                print(f"  power of {cid} ...", flush=True)
                try:
                    rows, note = list(power_fn(ctx, **claim_opts.get(cid, {}))), ""
                except MissingModelError as e:
                    rows, note = [], f"not run: {e}"
            atomic_write_json(
                out_dir / "power" / f"{CLAIMS[cid]}.json", _power_json(cid, mod, rows, note)
            )
            power_rows += [(cid, r) for r in rows]
            if note:
                print(f"  power of {cid}: {note}")
    print()
    print("\n\n".join(tables))
    print()
    print(summary_table(results))
    print()
    print(LEGEND)
    if getattr(args, "power", False):
        print("\npower: the mildest perturbation of the real model that flips each check")
        print(power_table(power_rows) if power_rows else "(no bound or empirical checks)")
        print(f"\npower JSON in {out_dir / 'power'}/")
    print(f"\nJSON reports in {out_dir}/")
    print(EXIT_LEGEND)
    return exit_code(combine(r.outcome for r in results.values()))


# ------------------------------------------------- verify: data, settings and user models
def _split_set(pairs: list[str] | None) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``--set`` values of ``verify``: ``KEY=V`` (the base config) and ``SETTING.KEY=V``
    (one setting: its config for radius's models, the loaded model's option for yours)."""
    from radius.training.config import SETTINGS

    base: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for key, value in _parse_set(pairs or []).items():
        head, dot, field_name = key.partition(".")
        if not dot:
            if key == "keep_rate":
                raise RadiusError(
                    f"--set keep_rate={value}: each setting has its own keep rate (clean 1, "
                    "masking and pia 0.5 unless given); set it per setting: --set "
                    f"masking.keep_rate={value} (and/or pia.keep_rate={value})"
                )
            base[key] = value
            continue
        if head not in SETTINGS:
            close = difflib.get_close_matches(head, SETTINGS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RadiusError(
                f"--set {key}={value}: {head!r} is not a setting (choose from "
                f"{', '.join(SETTINGS)}){hint}"
            )
        per.setdefault(head, {})[field_name] = value
    return base, per


def _verify_options(args: argparse.Namespace, given: dict[str, Any]):
    """VerifyOptions of ``verify``: ``--quick`` starts from the API's QUICK_OPTIONS (the
    same samples as ``radius.verify.run_all(..., quick=True)``), explicit sizes on top."""
    from radius.verify.api import _options

    return _options(bool(getattr(args, "quick", False)), given)


def _verify_inputs(args: argparse.Namespace):
    """(dataset, user models or None, base config, per-setting overrides) of ``verify``."""
    from radius.data.loaders import load_any
    from radius.training.config import TrainConfig
    from radius.verify.api import load_models

    ds = load_any(args.data, split=_split_overrides(args) or None, fmt=args.format)
    base_over, per_setting = _split_set(getattr(args, "set", None))
    base = TrainConfig(model=args.model) if args.model else TrainConfig()
    base = base.replace(**base_over)
    if args.adapter and not args.checkpoint:
        raise RadiusError("--adapter needs --checkpoint [SETTING=]PATH")
    if args.model_factory and not (args.checkpoint or getattr(args, "sweep_checkpoint", None)):
        raise RadiusError("--model-factory needs --checkpoint [SETTING=]PATH")
    if not args.checkpoint:
        return ds, None, base, per_setting
    user = load_models(
        args.checkpoint,
        ds,
        factory=args.model_factory,
        settings=per_setting,
        adapter=args.adapter,
    )
    return ds, user, base, per_setting


def cmd_figures(args: argparse.Namespace) -> int:
    from radius.figures.registry import run_figures

    return run_figures(args)


def cmd_report(args: argparse.Namespace) -> int:
    from radius.report import run_report

    return run_report(args)


def cmd_experiment(args: argparse.Namespace) -> int:
    from radius.experiments import run_experiment
    from radius.training.config import TrainConfig

    if args.set:
        args.base_config = TrainConfig().replace(**_parse_set(args.set))
    args.command_line = "radius " + " ".join(args.argv)
    return run_experiment(args)


# --------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with close-match suggestions for unknown commands, exit code 2."""

    def error(self, message: str):  # noqa: D102
        if "invalid choice" in message:
            import re

            m = re.search(r"invalid choice: '([^']*)'", message)
            choices = re.findall(r"'([^']+)'", message.split("choose from", 1)[-1])
            if m:
                close = difflib.get_close_matches(m.group(1), choices, n=2)
                if close:
                    message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--setting", default="pia", help="clean | masking | pia (default: pia)")
    p.add_argument("--model", choices=["multvae", "recvae"], default=None)
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--keep-rate", dest="keep_rate", type=float, help="rho, mask keep probability")
    p.add_argument("--beta-cap", dest="beta_cap", type=float)
    p.add_argument("--lambda-a", dest="lambda_a", type=float, help="PIA anchor weight")
    p.add_argument("--latent-dim", dest="latent_dim", type=int)
    p.add_argument("--hidden-dims", dest="hidden_dims", help="e.g. 600 or 600,300")
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any TrainConfig field")


def _arg_real(text: str) -> float:
    """A finite number (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return v


def _arg_count(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        return v

    parse.__name__ = "count"
    return parse


def _arg_prop(text: str) -> float:
    """A proportion strictly inside (0, 1) (argparse type)."""
    v = _arg_real(text)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(
            f"must lie in (0, 1), got {text}: the fraction of each held-out user's items "
            "held out as targets (the rest is the fold-in part)"
        )
    return v


def _arg_seed(text: str) -> int:
    v = _arg_count(0)(text)
    if v >= 2**32:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2**32), got {v}")
    return v


def _arg_heldout(text: str) -> tuple[str, int | float]:
    """``600`` (a count of users) or ``0.1`` (a fraction of users), per held-out split."""
    if text.strip().isdigit():
        v = int(text)
        if v < 1:
            raise argparse.ArgumentTypeError(f"a count of users must be >= 1, got {v}")
        return ("count", v)
    v = _arg_real(text)
    if not 0.0 < v < 0.5:
        raise argparse.ArgumentTypeError(
            f"must be a count of users (e.g. 600) or a fraction in (0, 0.5) (e.g. 0.1), "
            f"got {text}: validation and test each take this many users"
        )
    return ("fraction", v)


def _add_split_options(p: argparse.ArgumentParser) -> None:
    """The split parameters of ``data prepare``; unset ones keep the format's defaults."""
    g = p.add_argument_group(
        "split (Liang et al. 2018 strong generalisation, or --protocol weak; an option left "
        "out keeps the chosen format's default, see README 'Data formats')"
    )
    thr = g.add_mutually_exclusive_group()
    thr.add_argument(
        "--min-rating", type=_arg_real, metavar="R", help="keep ratings >= R (inclusive)"
    )
    thr.add_argument(
        "--rating-above", type=_arg_real, metavar="R", help="keep ratings > R (strict)"
    )
    thr.add_argument("--all-ratings", action="store_true", help="keep every rating")
    g.add_argument(
        "--min-user",
        type=_arg_count(0),
        metavar="N",
        help="keep users with >= N interactions (counted after the item filter)",
    )
    g.add_argument(
        "--min-item", type=_arg_count(0), metavar="N", help="keep items with >= N interactions"
    )
    g.add_argument(
        "--heldout-users",
        type=_arg_heldout,
        metavar="N|F",
        help="validation users and test users, each: a count (600) or a fraction of the "
        "users (0.1)",
    )
    g.add_argument(
        "--test-prop",
        "--target-prop",
        dest="test_prop",
        type=_arg_prop,
        metavar="P",
        help="fraction of each held-out user's items held out as targets (fold-in: 1 - P)",
    )
    g.add_argument(
        "--min-heldout-items",
        type=_arg_count(1),
        metavar="N",
        help="held-out users with fewer items (after the item restriction) are dropped",
    )
    g.add_argument(
        "--split-seed",
        type=_arg_seed,
        metavar="S",
        help="seed of the user permutation and of the fold-in / target split",
    )
    g.add_argument(
        "--protocol",
        choices=["strong", "weak"],
        help="strong (default): whole users held out (Liang et al.); weak: each user's "
        "interactions split 80/10/10 (RecBole's and cornac's default)",
    )
    g.add_argument(
        "--val-prop",
        type=_arg_prop,
        metavar="P",
        help="weak protocol: share of each user's interactions for validation (default 0.1; "
        "--test-prop is then the test share, default 0.1)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="radius",
        description="Verify how VAE recommenders collaborate: train Multi-VAE (masking, PIA), "
        "check the paper's claims, draw the figures.",
    )
    from radius.version import __version__

    ap.add_argument("--version", action="version", version=f"radius {__version__}")
    sub = ap.add_subparsers(dest="command", parser_class=_Parser)

    data = sub.add_parser("data", help="prepare or describe a dataset")
    dsub = data.add_subparsers(dest="data_command", parser_class=_Parser)
    p = dsub.add_parser("prepare", help="parse, filter and split a dataset (default: synthetic)")
    p.add_argument("path", nargs="?", help="raw file/folder; omitted: the synthetic default")
    p.add_argument(
        "--format",
        default="auto",
        help="auto | ml-100k | ml-1m | ml-20m | netflix | msd | csv | recbole",
    )
    p.add_argument("--out", help="output folder (default runs/data/NAME)")
    p.add_argument("--name", help="dataset name in the manifest")
    _add_split_options(p)
    _add_synthetic_options(p)
    p.set_defaults(func=cmd_data_prepare)
    p = dsub.add_parser("info", help="summary of a dataset")
    p.add_argument("path", nargs="?", help="prepared folder, raw file or 'default'")
    p.add_argument("--json", help="write the summary here as JSON")
    p.set_defaults(func=cmd_data_info)
    p = dsub.add_parser("fetch-ml100k", help="download the recbole wheel and extract ML-100k")
    p.add_argument("--dest", default=".cache", help="folder (default .cache)")
    p.set_defaults(func=cmd_data_fetch_ml100k)

    p = sub.add_parser("train", help="train a model (default: Multi-VAE + PIA on the default)")
    p.add_argument("--data", default="default", help="'default', a prepared folder or a raw file")
    p.add_argument("--out", help="checkpoint path (default runs/DATA/MODEL-SETTING-seedS.pt)")
    p.add_argument("--resume", action="store_true", help="continue from --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on held-out users")
    p.add_argument("--data", default="default")
    p.add_argument("--checkpoint", help="checkpoint; omitted: the cached model of --setting")
    p.add_argument("--setting", default="pia")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--json", help="where to write the metrics JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("verify", help="check a claim of the paper: PASS, FAIL or INCONCLUSIVE")
    p.add_argument(
        "--theorem",
        default="2.6",
        help="2.3 | 2.4 | 2.5 | 2.6 | beta-kl | 3.1 | 3.2 | all (comma-separated ok)",
    )
    p.add_argument("--data", default="default")
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="[SETTING=]PATH",
        help="verify YOUR model: SETTING (clean, masking, pia) = checkpoint; repeat for "
        "several; a bare PATH is the pia model. Settings not given are not trained: claims "
        "that need them are INCONCLUSIVE, naming them",
    )
    p.add_argument(
        "--model-factory",
        dest="model_factory",
        action="append",
        metavar="[SETTING=]MODULE:FUNCTION",
        help="builds your architecture, called with n_items= and setting= when it takes "
        "them; the checkpoint's state_dict is loaded into it. SETTING=MODULE:FUNCTION for one "
        "setting (repeat per setting); a bare one serves every setting without its own",
    )
    p.add_argument(
        "--adapter",
        choices=["recbole"],
        default=None,
        help="the checkpoints are another library's (recbole: RecBole's saved .pth of "
        "MultiVAE or RecVAE; --data is the dataset saved from radius.adapters.recbole_dataset)",
    )
    p.add_argument(
        "--format",
        default="auto",
        help="format of a raw --data file (auto | ml-100k | ml-1m | ml-20m | netflix | msd | "
        "csv | recbole)",
    )
    _add_split_options(p)
    p.add_argument("--model", choices=["multvae", "recvae"], default=None)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--n-pairs", dest="n_pairs", type=int, help="pairs sampled (T2.5's exact gap: <= 200)"
    )
    p.add_argument(
        "--n-users", dest="n_users", type=int, help="users sampled (beta-KL: users x masks <= 2000)"
    )
    p.add_argument(
        "--n-mc",
        dest="n_mc",
        type=int,
        help="Monte Carlo draws (T2.3: <= 16 per user; T2.5's exact gap: <= 1000 per component)",
    )
    p.add_argument("--confidence", type=float)
    p.add_argument("--min-fraction", dest="min_fraction", type=float)
    p.add_argument(
        "--seeds",
        type=_arg_count(1),
        help="training seeds of every mechanism check (default 3: seeds S, S+1, S+2 with S "
        "the config's seed); their intervals span the seeds, then the users",
    )
    p.add_argument(
        "--workers",
        type=_arg_count(1),
        help="models trained at once before the claims run, one thread each (default: "
        "the CPU count)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller samples: those of radius.verify.run_all(..., quick=True)",
    )
    p.add_argument("--out", help="folder for the JSON reports (default runs/DATA/verify)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any TrainConfig field of the models verified (the settings apply on top); "
        "SETTING.KEY=VALUE for one setting, e.g. masking.keep_rate=0.5 (with --checkpoint: "
        "keep_rate, lambda_a, input_convention, posterior_scale, kl_weight of that model; a "
        "value its checkpoint records differently is an error)",
    )
    p.add_argument(
        "--power",
        action="store_true",
        help=(
            "also perturb the real model/constants in grades and report the mildest grade "
            "that flips each bound and empirical check (JSON in OUT/power/)"
        ),
    )
    _add_sweep_options(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("figures", help="draw a figure (tsne, cohorts, radius, masking, beta, all)")
    p.add_argument("name", nargs="?", default="all")
    p.add_argument("--data", default="default")
    p.add_argument(
        "--model",
        choices=["multvae", "recvae"],
        default=None,
        help="model the figures are drawn for (default multvae)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder for PNG + data (default figures/out; figures/out/recvae for --model recvae)",
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("report", help="regenerate the results sections of paper_checks.md")
    p.add_argument(
        "--verify-dir", default=None, help="verify JSON folder (default runs/synthetic/verify)"
    )
    p.add_argument("--output", default="paper_checks.md")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "experiment", help="the paper's experiments: ablation over settings and seeds"
    )
    p.add_argument("name", nargs="?", default="ablation", choices=["ablation"])
    p.add_argument("--data", default="default")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--model", choices=["multvae", "recvae"], default="multvae")
    p.add_argument("--out", help="JSON output (default runs/DATA/ablation-MODEL.json)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="base TrainConfig field for every setting, e.g. batch_size=100; "
        "lambda_a / anchor_init / anchor_init_scale given here are used as is (no grid)",
    )
    p.add_argument(
        "--lambda-grid",
        dest="lambda_grid",
        metavar="L1,L2,...",
        help="PIA lambda_A grid, chosen on validation users (default 0.01,0.1,1,3,10)",
    )
    p.add_argument(
        "--init-grid",
        dest="init_grid",
        metavar="INIT,...",
        help="anchor initialisations, normal:SCALE or zeros (default normal:0.01,normal:0.1)",
    )
    p.add_argument(
        "--grid-seeds",
        dest="grid_seeds",
        type=int,
        default=1,
        help="seeds 0..N-1 averaged per grid point on validation (default 1: seed 0)",
    )
    p.add_argument(
        "--controls",
        action="store_true",
        help="add trace-only, alignment-only and masking without early stopping",
    )
    p.add_argument(
        "--min-users",
        dest="min_users",
        type=int,
        default=20,
        help="fewer test users in a comparison -> INCONCLUSIVE (default 20)",
    )
    p.add_argument(
        "--workers",
        type=_arg_count(1),
        help="models trained at once, one thread each (default: the CPU count)",
    )
    p.set_defaults(func=cmd_experiment)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "data" and getattr(args, "data_command", None) is None:
        args = parser.parse_args(["data", "info", *([] if argv is None else [])])
    try:
        return int(args.func(args) or 0)
    except RadiusError as e:
        print(f"radius: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("radius: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
