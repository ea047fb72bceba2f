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

from radius.data.dataset import Dataset
from radius.errors import RadiusError
from radius.training.config import SETTINGS, TrainConfig
from radius.verify.base import ClaimResult, VerifyOptions
from radius.verify.context import MissingModelError, VerifyContext

__all__ = [
    "run",
    "run_all",
    "run_claim",
    "format_table",
    "load_models",
    "load_factory",
    "QUICK_OPTIONS",
    "as_dataset",
    "check_setting",
    "MODEL_OPTIONS",
]

QUICK_OPTIONS = VerifyOptions(n_pairs=120, n_users=60, n_mc=800, seeds=2, quick=True)
"""Smaller samples for a quick look (``quick=True``)."""

_OPTION_FIELDS = ("seed", "n_pairs", "n_users", "n_mc", "confidence", "min_fraction", "seeds")


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


MODEL_OPTIONS: tuple[str, ...] = (
    "keep_rate",
    "lambda_a",
    "input_convention",
    "posterior_scale",
    "kl_weight",
)
"""What a user model declares about its training (attributes of ``radius.model.wrap``),
settable per setting on the command line (``--set masking.keep_rate=0.5``)."""


def check_setting(setting: str, model: Any, *, where: str | None = None) -> None:
    """Refuse a user model that contradicts the setting it is given as (``RadiusError``).

    - ``pia``: anchors (the (I, d) table trained with) and ``lambda_a > 0``;
    - ``masking`` and ``pia``: a declared ``keep_rate`` below 1 (the masked input);
    - ``clean``: ``keep_rate`` 1 (or none declared).

    Claims would otherwise measure a setting the model does not have (a PIA check on a
    model without anchors has nothing to check), so this runs before anything else.
    ``where`` (e.g. the checkpoint path) is named in the message.
    """
    who = f"the {setting!r} model" + (f" ({where})" if where else "")
    rho = getattr(model, "keep_rate", None)
    rho = float(rho) if isinstance(rho, int | float) else None
    if setting == "pia":
        if getattr(model, "anchors", None) is None:
            raise RadiusError(
                f"{who} has no anchors (model.anchors is None): PIA is masking plus "
                "the anchor loss, and its checks need the (n_items, d) anchor table the model "
                "was trained with (wrap(..., anchors=E, lambda_a=...)); a model trained "
                "without anchors is a 'masking' (keep rate < 1) or 'clean' model"
            )
        lam = getattr(model, "lambda_a", None)
        if not (isinstance(lam, int | float) and float(lam) > 0):
            raise RadiusError(
                f"{who} declares lambda_a = {lam}: give the anchor-loss weight it was "
                "trained with (wrap(..., lambda_a=...); on the command line "
                "--set pia.lambda_a=VALUE)"
            )
    if setting in ("masking", "pia") and (rho is None or rho >= 1.0):
        what = "no keep_rate" if rho is None else f"keep_rate {rho:g} (clean input)"
        raise RadiusError(
            f"{who} declares {what}: give the keep rate of the input mask it "
            f"was trained with (wrap(..., keep_rate=RHO); on the command line --set "
            f"{setting}.keep_rate=RHO; RecBole: 1 - dropout_prob), or pass it as 'clean'"
        )
    if setting == "clean" and rho is not None and rho < 1.0:
        raise RadiusError(
            f"{who} declares keep_rate {rho:g} (a masked input): pass it as "
            "'masking' (or as 'pia' with its anchors)"
        )


def _context(
    dataset: Dataset,
    models: Mapping[str, nn.Module] | None,
    fit: Callable[..., nn.Module] | None,
    options: VerifyOptions,
    base_config: TrainConfig | None,
    cache_dir: str | Path | None,
    progress: bool,
    *,
    setting_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> VerifyContext:
    """The context of a run; user models are validated against the data, checked against
    their settings (``check_setting``) and screened for a degenerate posterior
    (``radius.model.wrap.posterior_warnings``, into each model's ``radius_warnings``)."""
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
            seq = list(model) if isinstance(model, Sequence) else [model]
            if not seq:
                raise ValueError(f"models[{setting!r}] is an empty list")
            for i, m in enumerate(seq):
                name = f"the {setting!r} model" + (f" #{i}" if len(seq) > 1 else "")
                validate(m, n_items=dataset.n_items, name=name)
                check_setting(setting, m)
        from radius.model.wrap import posterior_warnings

        for model in models.values():
            for m in list(model) if isinstance(model, Sequence) else [model]:
                posterior_warnings(m, dataset.train, seed=options.seed)
    if fit is not None and not callable(fit):
        raise TypeError(f"fit must be callable fit(beta) -> model, got {type(fit).__name__}")
    if fit is not None and models is None:
        raise ValueError("fit is for user models: pass models= as well")
    if cache_dir is None and models is None:
        from radius.training.cache import default_cache_dir

        cache_dir = default_cache_dir()
    return VerifyContext(
        dataset=dataset,
        options=options,
        base_config=base_config or TrainConfig(),
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        progress=progress,
        models=dict(models) if models is not None else None,
        fit_beta=fit,
        setting_overrides={k: dict(v) for k, v in (setting_overrides or {}).items()},
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


def run_claim(
    claim_id: str, ctx: VerifyContext, claim_options: Mapping[str, Any] | None = None
) -> ClaimResult:
    """Run one claim module on a context; a ``MissingModelError`` becomes an INCONCLUSIVE
    result naming what is missing (``details["missing"]``). Unknown options: TypeError."""
    from radius.verify import claim_module

    claim_options = dict(claim_options or {})

    mod = claim_module(claim_id)
    params = inspect.signature(mod.run).parameters
    bad = sorted(k for k in claim_options if k not in params or k == "ctx")
    if bad:
        valid = sorted(k for k in params if k != "ctx")
        raise TypeError(
            f"claim {claim_id} has no option(s) {bad}; its options: {', '.join(valid) or 'none'}"
        )
    ctx.begin_claim()
    try:
        res = mod.run(ctx, **claim_options)
    except MissingModelError as e:
        res = _not_run(mod, claim_id, ctx, e)
    res.warnings = list(dict.fromkeys([*res.warnings, *ctx.used_warnings()]))
    return res


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
    seeds: int | None = None,
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
        is not given is INCONCLUSIVE, naming it (``details["missing"]``). A setting may
        map to a list of models, one per training seed (the first is the main one): the
        mechanism checks' intervals then span the seeds.
    dataset : a ``Dataset``, ``"default"`` (the synthetic default), a prepared folder or
        a raw ratings file.
    fit : ``fit(beta) -> model`` (optionally ``fit(beta, seed=...)``), the user's own
        training at KL weight beta, for the beta-KL sweep; without it the sweep is not run
        and the claim says so.
    seed, n_pairs, n_users, n_mc, confidence, min_fraction : ``VerifyOptions`` fields.
    seeds : training seeds of the mechanism checks (radius's models: trained with seeds
        ``base_config.seed + k``; user models: give a list of models per setting).
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
        quick,
        dict(zip(_OPTION_FIELDS, (seed, n_pairs, n_users, n_mc, confidence, min_fraction, seeds))),
    )
    ctx = _context(ds, models, fit, opts, base_config, cache_dir, progress)
    return run_claim(ids[0], ctx, claim_options)


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
    return {cid: run_claim(cid, ctx, per.get(cid, {})) for cid in ids}


def format_table(results: Mapping[str, ClaimResult] | ClaimResult) -> str:
    """Plain text of results (``radius.verify.render.format_table``): each claim's checks
    grouped by role with wrapped notes, its verdict, assumptions, mechanism,
    implementation and warnings lines, a summary table and a legend."""
    from radius.verify.render import format_table as _format

    if isinstance(results, ClaimResult):
        results = {results.claim: results}
    return _format(results)


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable named by ``module:function`` (or ``path/to/file.py:function``).

    The current directory is importable, as for ``python -m``. Bad specs raise
    ``RadiusError`` naming the module or attribute.
    """
    import importlib
    import importlib.util
    import sys

    mod_name, sep, attr = str(spec).rpartition(":")
    if not sep or not mod_name or not attr:
        raise RadiusError(f"--model-factory expects module:function, got {spec!r}")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise RadiusError(f"--model-factory: no such file {mod_name}")
            loaded = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(loaded)  # type: ignore[arg-type]
            loaded.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(mod_name)
    except RadiusError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module: report what broke
        raise RadiusError(
            f"--model-factory: cannot import {mod_name!r} ({type(e).__name__}: {e})"
        ) from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RadiusError(f"--model-factory: {mod_name!r} has no callable {attr!r}")
    return fn


def _setting_name(raw: str, what: str) -> str:
    """A setting name, or RadiusError with a close match."""
    import difflib

    name = raw.strip()
    if name not in SETTINGS:
        close = difflib.get_close_matches(name, SETTINGS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RadiusError(
            f"{what}: unknown setting {name!r} (choose from {', '.join(SETTINGS)}){hint}"
        )
    return name


def factory_specs(specs: str | Sequence[str] | None) -> dict[str, str]:
    """``--model-factory`` values by setting: ``SETTING=module:function`` for one setting,
    a bare ``module:function`` (key ``"*"``) for every setting without its own.

    Raises ``RadiusError`` on an unknown setting or one given twice."""
    if specs is None:
        return {}
    out: dict[str, str] = {}
    for spec in [specs] if isinstance(specs, str) else list(specs):
        head, sep, rest = str(spec).partition("=")
        key, fn = ("*", str(spec)) if not sep else (head, rest)
        if key != "*":
            key = _setting_name(key, f"--model-factory {spec!r}")
        if key in out:
            which = "a bare module:function" if key == "*" else f"setting {key!r}"
            raise RadiusError(f"--model-factory: {which} given twice")
        out[key] = fn
    return out


def _state_dict(payload: Any, path: Path) -> dict[str, Any]:
    from radius.errors import CheckpointError

    if isinstance(payload, nn.Module):
        return payload.state_dict()
    if isinstance(payload, Mapping):
        for key in ("model_state", "state_dict", "model"):
            inner = payload.get(key)
            if isinstance(inner, Mapping):
                return dict(inner)
        import torch

        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            return dict(payload)
    raise CheckpointError(
        f"{path}: no state_dict found (expected a state_dict, or a dict with 'model_state' / "
        "'state_dict')"
    )


def _build(
    factory: Callable[..., nn.Module], n_items: int, spec: str, setting: str | None = None
) -> nn.Module:
    """``factory(n_items=..., setting=...)``, each keyword passed when it takes it (or
    ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    open_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = {}
    if "n_items" in params or open_kw:
        kwargs["n_items"] = n_items
    if setting is not None and ("setting" in params or open_kw):
        kwargs["setting"] = setting
    try:
        model = factory(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's factory: report what broke
        raise RadiusError(f"--model-factory {spec}: failed ({type(e).__name__}: {e})") from e
    if not isinstance(model, nn.Module):
        raise RadiusError(
            f"--model-factory {spec}: returned {type(model).__name__}, not an nn.Module"
        )
    return model


def _recorded(payload: Any, loaded_config: TrainConfig | None) -> dict[str, Any]:
    """What a checkpoint records of the model's training (radius's config, or a ``config``
    mapping saved beside the state dict)."""
    if loaded_config is not None:
        return {
            "keep_rate": float(loaded_config.keep_rate),
            "lambda_a": float(loaded_config.lambda_a),
            "input_convention": str(loaded_config.input_convention),
        }
    cfg = payload.get("config") if isinstance(payload, Mapping) else None
    if not isinstance(cfg, Mapping):
        return {}
    out = {k: cfg[k] for k in MODEL_OPTIONS if k in cfg}
    if "keep_rate" not in out and isinstance(cfg.get("dropout_prob"), int | float):
        out["keep_rate"] = 1.0 - float(cfg["dropout_prob"])
    return out


def apply_model_options(
    model: nn.Module,
    setting: str,
    given: Mapping[str, Any],
    recorded: Mapping[str, Any],
    where: str,
) -> None:
    """Set the per-setting options given on the command line on a loaded model.

    A value the checkpoint records (``recorded``) is never overridden: a given value that
    differs is a ``CheckpointError`` naming both; one that agrees is a no-op. Other
    values replace what the model declares. ``model.radius_origin`` records, per option,
    where its value came from (checkpoint, command line, model)."""
    import math

    from radius.errors import CheckpointError

    unknown = sorted(set(given) - set(MODEL_OPTIONS))
    if unknown:
        raise RadiusError(
            f"--set {setting}.{unknown[0]}: not an option of a loaded model (a trained "
            f"model's options: {', '.join(MODEL_OPTIONS)})"
        )
    origin = {k: "recorded in the checkpoint" for k in recorded}
    for key, value in given.items():
        if key in recorded:
            same = (
                math.isclose(float(recorded[key]), float(value), rel_tol=1e-9)
                if isinstance(value, int | float) and isinstance(recorded[key], int | float)
                else recorded[key] == value
            )
            if not same:
                raise CheckpointError(
                    f"{where}: the checkpoint records {key} {recorded[key]!r}, but --set "
                    f"{setting}.{key}={value!r} was given; a recorded value is not overridden "
                    "(drop the option, or give the checkpoint trained with that value)"
                )
            continue
        _set_model_option(model, key, value, f"--set {setting}.{key}")
        origin[key] = f"--set {setting}.{key}"
    for key in MODEL_OPTIONS:
        if key not in origin and getattr(model, key, None) is not None:
            origin[key] = "declared by the model"
    model.radius_origin = origin


def _set_model_option(model: nn.Module, key: str, value: Any, what: str) -> None:
    import math

    if key == "input_convention":
        from radius.model.wrap import CONVENTIONS

        if value not in CONVENTIONS:
            raise RadiusError(f"{what}: must be one of {list(CONVENTIONS)}, got {value!r}")
        model.input_convention = str(value)
        model.input_normalization = "none" if value == "none" else "l2"
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise RadiusError(f"{what}: must be a finite number, got {value!r}")
    v = float(value)
    if key == "keep_rate" and not 0.0 < v <= 1.0:
        raise RadiusError(f"{what}: keep_rate (rho) must be in (0, 1], got {v:g}")
    if key in ("lambda_a", "kl_weight") and v < 0:
        raise RadiusError(f"{what}: must be >= 0, got {v:g}")
    if key == "posterior_scale":
        if v <= 0:
            raise RadiusError(f"{what}: must be > 0, got {v:g}")
        if not hasattr(model, "logvar_offset"):
            raise RadiusError(
                f"{what}: {type(model).__name__} does not apply a posterior scale (only "
                "radius.model.wrap models do: wrap(..., posterior_scale=c))"
            )
        model.logvar_offset = 2.0 * math.log(v)
    setattr(model, key, v)


def load_models(
    checkpoints: Sequence[str],
    dataset: Dataset,
    *,
    factory: str | Sequence[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    adapter: str | None = None,
) -> dict[str, nn.Module]:
    """User models from ``SETTING=PATH`` specs (a bare ``PATH`` is the pia model).

    Parameters
    ----------
    checkpoints : ``SETTING=PATH`` (or a bare ``PATH``: the pia model) per model.
    dataset : the data the models must fit (item count; radius checkpoints: the data hash).
    factory : ``module:function`` (every setting) and/or ``SETTING=module:function``
        (that setting): builds the architecture, called with ``n_items=`` and
        ``setting=`` when it takes them; the file's state_dict is loaded into it strictly
        (missing or unexpected keys and shape mismatches are named).
    settings : per-setting model options (``MODEL_OPTIONS``; ``--set masking.keep_rate=0.5``)
        set on the loaded model; a value the checkpoint records differently is an error.
    adapter : ``"recbole"``: the files are RecBole checkpoints, read by
        ``radius.adapters.recbole_checkpoint`` against a dataset built from RecBole's split.

    Without ``factory`` or ``adapter`` a file must be a radius checkpoint (``radius
    train``), refused when made for other data. Every model is validated against
    ``dataset`` and checked against its setting (``check_setting``). All errors are
    ``RadiusError`` (exit 2) and are raised before anything runs or is written.
    """
    import torch

    from radius.errors import CheckpointError
    from radius.model.wrap import validate

    specs = factory_specs(factory)
    builders = {k: load_factory(v) for k, v in specs.items()}
    settings = {_setting_name(k, f"--set {k}.*"): dict(v) for k, v in (settings or {}).items()}
    if adapter is not None:
        from radius.adapters import ADAPTERS

        if adapter not in ADAPTERS:
            raise RadiusError(f"--adapter must be one of {list(ADAPTERS)}, got {adapter!r}")
        if builders:
            raise RadiusError("give --adapter or --model-factory, not both")
    out: dict[str, nn.Module] = {}
    for spec in checkpoints:
        setting, sep, raw = str(spec).partition("=")
        if not sep:
            setting, raw = "pia", str(spec)
        setting = setting.strip()
        if setting not in SETTINGS:
            raise RadiusError(
                f"--checkpoint {spec!r}: unknown setting {setting!r} (choose from "
                f"{', '.join(SETTINGS)}; a bare path is the pia model)"
            )
        if setting in out:
            raise RadiusError(f"--checkpoint: setting {setting!r} given twice")
        path = Path(raw)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}")
        if adapter == "recbole":
            from radius.adapters import recbole_checkpoint

            model = recbole_checkpoint(path, dataset)
            recorded = dict(model.recorded_config)
            apply_model_options(model, setting, settings.get(setting, {}), recorded, str(path))
            model.radius_path = str(path)
            out[setting] = model
            continue
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - corrupt or not a torch file
            raise CheckpointError(
                f"{path}: not a readable checkpoint ({type(e).__name__}: {e})"
            ) from e
        is_radius = isinstance(payload, Mapping) and "format" in payload and "data_hash" in payload
        if is_radius and payload["data_hash"] != dataset.hash:
            raise CheckpointError(
                f"{path}: checkpoint was trained on data {payload.get('data_name')!r} (hash "
                f"{payload['data_hash']}), not on {dataset.name!r} (hash {dataset.hash})"
            )
        spec_fn = specs.get(setting, specs.get("*"))
        builder = builders.get(setting, builders.get("*"))
        loaded_config = None
        if builder is None:
            if not is_radius:
                raise CheckpointError(
                    f"{path}: not a radius checkpoint; pass --model-factory module:function to "
                    "build its architecture"
                )
            from radius.training.checkpoints import load_checkpoint

            loaded = load_checkpoint(path, dataset)
            model, loaded_config = loaded.model, loaded.config
            model.lambda_a = float(loaded.config.lambda_a)
            if not hasattr(model, "keep_rate"):
                model.keep_rate = float(loaded.config.keep_rate)
        else:
            model = _build(builder, dataset.n_items, str(spec_fn), setting)
            state = _state_dict(payload, path)
            own = model.state_dict()
            bad = [
                f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                for k, v in state.items()
                if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
            ]
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if bad or missing or unexpected:
                parts = []
                if bad:
                    parts.append("shape mismatch " + "; ".join(bad[:5]))
                if missing:
                    parts.append(f"missing keys {missing[:5]}")
                if unexpected:
                    parts.append(f"unexpected keys {unexpected[:5]}")
                raise CheckpointError(
                    f"{path}: does not fit the model built by {spec_fn}: " + ", ".join(parts)
                )
            model.load_state_dict(state)
        recorded = _recorded(payload, loaded_config)
        apply_model_options(model, setting, settings.get(setting, {}), recorded, str(path))
        out[setting] = validate(
            model.cpu().eval(), n_items=dataset.n_items, name=f"the {setting!r} model ({path})"
        )
        out[setting].radius_path = str(path)
    for setting, model in out.items():
        check_setting(setting, model, where=getattr(model, "radius_path", None))
    unused = sorted(set(settings) - set(out))
    if unused and out:
        raise RadiusError(
            f"--set {unused[0]}.*: no --checkpoint {unused[0]}=PATH was given "
            f"(models given: {', '.join(sorted(out))})"
        )
    return out
