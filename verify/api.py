"""The public verification API: ``radius.verify.run(claim, models=..., dataset=...)``.

One call verifies one claim on models that radius did not train, or, with
``models=None``, on radius's own (explicitly trained, content-keyed) models as the CLI
does. Plain functions, no hidden state: every input is an argument.

>>> import radius
>>> res = radius.verify.run("2.4", models={"pia": my_model}, dataset=ds)  # doctest: +SKIP
>>> res.verdict  # doctest: +SKIP
'PASS'

A claim that needs a model which was not given (T2.5 compares clean with masking and
PIA models; the beta sweep needs ``fit(beta) -> model``) is reported INCONCLUSIVE,
with ``details["not_run"]`` saying why and ``details["missing"]`` naming what is
missing: radius never trains a substitute for a user's model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from radius.config import SETTINGS, TrainConfig
from radius.data.dataset import Dataset
from radius.verify.base import ClaimResult, VerifyOptions
from radius.verify.context import MissingModelError, VerifyContext

__all__ = ["run", "run_all", "format_table", "QUICK_OPTIONS", "as_dataset"]

QUICK_OPTIONS = VerifyOptions(n_pairs=120, n_users=60, n_mc=800, quick=True)
"""Smaller samples for a quick look (``quick=True``)."""

_OPTION_FIELDS = ("seed", "n_pairs", "n_users", "n_mc", "confidence", "min_fraction")


def as_dataset(dataset: Dataset | str | Path) -> Dataset:
    """A ``Dataset`` as given, or loaded from ``"default"``, a prepared folder or a raw file."""
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, str | Path):
        from radius.data.loaders import load_any

        return load_any(dataset)
    raise TypeError(
        f"dataset must be a radius Dataset, a path or 'default', got {type(dataset).__name__}"
    )


def _context(
    dataset: Dataset,
    models: Mapping[str, nn.Module] | None,
    fit: Callable[..., nn.Module] | None,
    options: VerifyOptions,
    base_config: TrainConfig | None,
    cache_dir: str | Path | None,
    progress: bool,
) -> VerifyContext:
    if models is not None:
        if not isinstance(models, Mapping):
            raise TypeError(
                f"models must map settings ({', '.join(SETTINGS)}) to nn.Modules, got "
                f"{type(models).__name__}"
            )
        from radius.model.wrap import validate

        for setting, model in models.items():
            if setting not in SETTINGS:
                import difflib

                close = difflib.get_close_matches(str(setting), SETTINGS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"unknown setting {setting!r} in models (choose from "
                    f"{', '.join(SETTINGS)}){hint}"
                )
            validate(model, n_items=dataset.n_items, name=f"the {setting!r} model")
    if fit is not None and not callable(fit):
        raise TypeError(f"fit must be callable fit(beta) -> model, got {type(fit).__name__}")
    if fit is not None and models is None:
        raise ValueError("fit is for user models: pass models= as well")
    if cache_dir is None and models is None:
        from radius.train import default_cache_dir

        cache_dir = default_cache_dir()
    return VerifyContext(
        dataset=dataset,
        options=options,
        base_config=base_config or TrainConfig(),
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        progress=progress,
        models=dict(models) if models is not None else None,
        fit_beta=fit,
    )


def _options(quick: bool, given: dict[str, Any]) -> VerifyOptions:
    base = QUICK_OPTIONS if quick else VerifyOptions()
    over = {k: v for k, v in given.items() if v is not None}
    return VerifyOptions(
        **{**{k: getattr(base, k) for k in _OPTION_FIELDS}, **over, "quick": quick}
    )


def _not_run(mod: Any, claim: str, ctx: VerifyContext, err: MissingModelError) -> ClaimResult:
    return ClaimResult(
        claim=claim,
        title=mod.TITLE,
        statement=mod.STATEMENT,
        reconstruction=bool(getattr(mod, "RECONSTRUCTION", False)),
        checks=[],
        method=f"not run: {err}",
        details={"not_run": str(err), "missing": list(err.missing)},
        context=ctx.describe(),
    )


def _run_one(claim_id: str, ctx: VerifyContext, claim_options: dict[str, Any]) -> ClaimResult:
    from radius.verify import claim_module

    mod = claim_module(claim_id)
    params = inspect.signature(mod.run).parameters
    bad = sorted(k for k in claim_options if k not in params or k == "ctx")
    if bad:
        valid = sorted(k for k in params if k != "ctx")
        raise TypeError(
            f"claim {claim_id} has no option(s) {bad}; its options: {', '.join(valid) or 'none'}"
        )
    try:
        return mod.run(ctx, **claim_options)
    except MissingModelError as e:
        return _not_run(mod, claim_id, ctx, e)


def run(
    claim: str,
    *,
    models: Mapping[str, nn.Module] | None = None,
    dataset: Dataset | str | Path = "default",
    fit: Callable[..., nn.Module] | None = None,
    seed: int | None = None,
    n_pairs: int | None = None,
    n_users: int | None = None,
    n_mc: int | None = None,
    confidence: float | None = None,
    min_fraction: float | None = None,
    quick: bool = False,
    base_config: TrainConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    **claim_options: Any,
) -> ClaimResult:
    """Verify one claim of the paper and return its result (checks, verdict, details).

    Parameters
    ----------
    claim : ``"2.3"``, ``"2.4"``, ``"2.5"``, ``"2.6"``, ``"beta-kl"``, ``"3.1"`` or
        ``"3.2"`` (aliases such as ``"l2.4"`` accepted).
    models : setting name (``clean`` / ``masking`` / ``pia``) -> a model following
        ``radius.model.protocol.VAEModel`` (e.g. from ``radius.model.wrap``), each
        validated against ``dataset`` first (``ModelError`` naming member and shape).
        None: radius's own models, trained explicitly and cached by content key (the CLI
        default). With models given, nothing is trained: a claim needing a setting that
        is not given is INCONCLUSIVE, naming it (``details["missing"]``).
    dataset : a ``Dataset``, ``"default"`` (the synthetic default), a prepared folder or
        a raw ratings file.
    fit : ``fit(beta) -> model`` (optionally ``fit(beta, seed=...)``), the user's own
        training at KL weight beta, for the beta-KL sweep; without it the sweep is not run
        and the claim says so.
    seed, n_pairs, n_users, n_mc, confidence, min_fraction : ``VerifyOptions`` fields.
    quick : smaller samples (``QUICK_OPTIONS``) unless given explicitly.
    base_config : radius's training config (radius's own models only; with user models
        only its setting knobs are read, the models' ``keep_rate`` / ``lambda_a`` first).
    cache_dir : model cache for radius's own models (default ``$RADIUS_CACHE_DIR``).
    progress : show progress bars.
    **claim_options : keyword options of the claim module's ``run`` (e.g.
        ``betas=(0.0, 0.5, 2.0)`` for beta-KL); an unknown one raises ``TypeError``.

    Returns
    -------
    ClaimResult : ``.verdict`` (PASS / FAIL / INCONCLUSIVE), ``.checks``, ``.details``,
    ``.to_dict()`` (JSON-able).
    """
    from radius.verify import resolve_ids

    ids = resolve_ids(claim)
    if len(ids) != 1:
        raise ValueError(f"run verifies one claim, got {claim!r}; use run_all for several")
    ds = as_dataset(dataset)
    opts = _options(
        quick, dict(zip(_OPTION_FIELDS, (seed, n_pairs, n_users, n_mc, confidence, min_fraction)))
    )
    ctx = _context(ds, models, fit, opts, base_config, cache_dir, progress)
    return _run_one(ids[0], ctx, claim_options)


def run_all(
    claims: str | Sequence[str] = "all",
    *,
    models: Mapping[str, nn.Module] | None = None,
    dataset: Dataset | str | Path = "default",
    fit: Callable[..., nn.Module] | None = None,
    quick: bool = False,
    claim_options: Mapping[str, Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> dict[str, ClaimResult]:
    """``run`` for several claims (``"all"``, ``"2.4,3.2"`` or a list) on one context.

    ``claim_options`` maps a claim id to its options (``{"beta-kl": {"betas": ...}}``);
    the other keywords are ``run``'s. Returns claim id -> ``ClaimResult``, in order.
    """
    from radius.verify import resolve_ids

    spec = claims if isinstance(claims, str) else ",".join(claims)
    ids = resolve_ids(spec)
    per = {resolve_ids(k)[0]: dict(v) for k, v in (claim_options or {}).items()}
    ds = as_dataset(dataset)
    opt_kw = {k: kwargs.pop(k, None) for k in _OPTION_FIELDS}
    base_config = kwargs.pop("base_config", None)
    cache_dir = kwargs.pop("cache_dir", None)
    progress = bool(kwargs.pop("progress", False))
    if kwargs:
        raise TypeError(f"run_all got unknown keyword(s) {sorted(kwargs)}")
    ctx = _context(ds, models, fit, _options(quick, opt_kw), base_config, cache_dir, progress)
    return {cid: _run_one(cid, ctx, per.get(cid, {})) for cid in ids}


def format_table(results: Mapping[str, ClaimResult]) -> str:
    """A plain-text table: one row per check (claim, check, kind, measured, bound, n,
    outcome, note) and one verdict line per claim."""
    rows = [["claim", "check", "kind", "measured", "bound", "n", "outcome", "note"]]

    def num(v: float) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    for cid, res in results.items():
        if not res.checks:
            rows.append(
                [cid, "(not run)", "-", "-", "-", "0", res.verdict, res.details.get("not_run", "")]
            )
        for c in res.checks:
            rows.append(
                [cid, c.name, c.kind, num(c.measured), num(c.bound), str(c.n), c.label, c.note[:70]]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines += [
        f"{cid}: {res.verdict} (implementation {res.implementation})"
        for cid, res in results.items()
    ]
    return "\n".join(lines)
