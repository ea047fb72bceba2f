r"""RecBole's MultiVAE and RecVAE behind the model protocol, and RecBole's split as a Dataset.

What the adapter reads (checked against RecBole 1.2.1's source,
``recbole/model/general_recommender/multivae.py`` and ``recvae.py``):

- item space: RecBole's item ids run 1 .. n_items - 1 with the padding item 0; the
  encoder's first ``nn.Linear`` has a column and the decoder's output layer a row for
  it. The adapter drops them, so radius's item j is RecBole's id j + 1, whose token is
  ``dataset.field2id_token[item_field][j + 1]`` (``recbole_dataset`` keeps that order).
  The padding column is exact to drop (no user has the padding item); the padding row
  takes part in RecBole's softmax, so the adapter measures the probability mass it held
  at the training users' posterior means and warns above ``PAD_MASS_MAX``.
- input convention: ``F.normalize(x)`` then ``F.dropout(x, dropout_prob)`` (inverted
  dropout): radius's ``"normalize-mask"`` with keep rate ``1 - dropout_prob``.
- posterior: ``reparameterize`` samples :math:`z = \mu + 0.01\,\sigma\,\epsilon` in
  training (``epsilon = zeros_like(std).normal_(mean=0, std=0.01)``), so the posterior
  the model learned with is :math:`\mathcal N(\mu, (0.01\sigma)^2)`:
  ``posterior_scale = 0.01`` (``RECBOLE_SAMPLING_SCALE``; ``recbole(model, ...)`` also
  measures the scale of the model's own ``reparameterize`` and warns if it differs).
- KL weight: MultiVAE anneals :math:`\beta = \min(\text{anneal\_cap},\ \text{update} /
  \text{total\_anneal\_steps})` per training step (``update`` counts steps; the default
  200,000 steps leave beta near 1e-4 after a few hundred steps); RecVAE weights user u's
  KL by :math:`\gamma |x_u|` (or ``beta`` when gamma is 0): the adapter declares the mean
  over training users.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from radius.data.dataset import Dataset
from radius.errors import CheckpointError, DataError
from radius.model.recvae import RecVAEEncoder
from radius.model.wrap import ModelError, WrappedVAE, add_warning, posterior_warnings, wrap

__all__ = [
    "recbole",
    "recbole_dataset",
    "recbole_checkpoint",
    "RECBOLE_SAMPLING_SCALE",
    "PAD_MASS_MAX",
]

RECBOLE_SAMPLING_SCALE = 0.01
"""c in RecBole 1.2.1's ``z = mu + c * sigma * eps`` (MultiVAE and RecVAE)."""

PAD_MASS_MAX = 1e-3
"""Largest softmax mass on RecBole's padding item (dropped by the adapter) that passes
without a warning, at any training user's posterior mean."""

SUPPORTED = ("MultiVAE", "RecVAE")
_SCALE_TOLERANCE = 0.05  # relative; the probe's standard error is about 0.4%


class _Hyper(NamedTuple):
    """What the adapter reads from a RecBole model or its config."""

    model: str  # "MultiVAE" | "RecVAE"
    dropout_prob: float
    kl_weight: float | None
    kl_note: str
    scale: float
    scale_note: str


# --------------------------------------------------------------------------- data
def _split_dataset(obj: Any) -> Any:
    """A RecBole Dataset from a Dataset or a DataLoader (its ``.dataset``)."""
    ds = getattr(obj, "dataset", obj)
    if not (hasattr(ds, "inter_matrix") and hasattr(ds, "field2id_token")):
        raise TypeError(
            f"expected a RecBole Dataset or DataLoader (inter_matrix, field2id_token), got "
            f"{type(obj).__name__}"
        )
    return ds


def _recbole_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recbole")
    except PackageNotFoundError:
        return None


def recbole_dataset(
    train: Any, valid: Any = None, test: Any = None, *, name: str | None = None
) -> Dataset:
    """The radius ``Dataset`` of RecBole's split, in RecBole's item space and order.

    Parameters
    ----------
    train, valid, test : RecBole Datasets or DataLoaders of the three parts
        (``data_preparation(config, dataset)`` returns the loaders), or ``train`` alone:
        a full RecBole Dataset, split here by ``dataset.build()`` with its config's
        ``eval_args`` (the split RecBole's own ``data_preparation`` makes).
    name : the dataset's name (default: RecBole's dataset name).

    Returns
    -------
    Dataset with ``protocol = "weak"`` (RecBole's default ``RS [0.8, 0.1, 0.1]``):
    ``train`` holds each user's training interactions (the rows the model reads), the
    validation and test users are those with a held-out interaction, their fold-in rows
    their training rows. Items: RecBole ids 1 .. n - 1 in order (the padding item 0
    dropped), ``manifest["id_maps"]["items"]`` their tokens. Users without a training
    interaction are left out (counted). ``manifest["recbole"]`` keeps what the adapter
    checks a model against (dataset name, item count with the padding item, RecBole's
    user id of each training row).
    """
    if valid is None and test is None:
        full = _split_dataset(train)
        if not hasattr(full, "build"):
            raise TypeError("a single RecBole object must be the full Dataset (it has build())")
        parts = full.build()
        if len(parts) != 3:
            raise DataError(
                f"RecBole's dataset.build() gave {len(parts)} parts; pass train, valid and "
                "test explicitly"
            )
        train, valid, test = parts
    tr = _split_dataset(train)
    uid, iid = tr.uid_field, tr.iid_field
    user_tokens = np.asarray(tr.field2id_token[uid])
    item_tokens = np.asarray(tr.field2id_token[iid])
    n_users, n_items = len(user_tokens), len(item_tokens)

    def matrix(part: Any, what: str) -> sp.csr_matrix:
        m = _split_dataset(part).inter_matrix(form="csr").tocsr()
        if m.shape != (n_users, n_items):
            raise DataError(
                f"RecBole {what} part has shape {m.shape}, the training part "
                f"{(n_users, n_items)}: parts of different datasets?"
            )
        return m

    train_m = matrix(tr, "training")
    rows = np.flatnonzero(np.diff(train_m.indptr) > 0)
    rows = rows[rows > 0]  # user 0 is RecBole's padding user
    heldout = {}
    dropped = {}
    for split, part in (("val", valid), ("test", test)):
        if part is None:
            continue
        m = matrix(part, split)
        keep = np.zeros(n_users, dtype=bool)
        keep[rows] = True
        dropped[split] = int(m[~keep].nnz)
        heldout[split] = m[rows][:, 1:]
    config = getattr(tr, "config", None)
    ds_name = str(_config_get(config, "dataset") or getattr(tr, "dataset_name", "recbole"))
    eval_args = _config_get(config, "eval_args")
    ds = Dataset.from_matrices(
        train_m[rows][:, 1:],
        heldout=heldout,
        item_ids=[str(t) for t in item_tokens[1:]],
        user_ids=[str(t) for t in user_tokens[rows]],
        name=name or ds_name,
        manifest={
            "source": {
                "library": "recbole",
                "version": _recbole_version(),
                "dataset": ds_name,
                "split": str(eval_args) if eval_args is not None else None,
            },
            "recbole": {
                "dataset": ds_name,
                "user_field": uid,
                "item_field": iid,
                "n_items_with_pad": int(n_items),
                "n_users_with_pad": int(n_users),
                "train_user_index": [int(r) for r in rows],
            },
        },
    )
    ds.manifest["counts"]["heldout_dropped_no_training_row"] = dropped
    ds.manifest["counts"]["users_without_training_row"] = int(n_users - 1 - len(rows))
    return ds


def _config_get(config: Any, key: str) -> Any:
    """``config[key]`` of a RecBole Config (or a dict), None when absent."""
    if config is None:
        return None
    try:
        return config[key]
    except (KeyError, TypeError, AttributeError):
        return None


def _as_radius_dataset(dataset: Any) -> Dataset:
    if isinstance(dataset, Dataset):
        if "recbole" not in dataset.manifest:
            raise DataError(
                f"dataset {dataset.name!r} was not built from RecBole (no manifest['recbole']): "
                "its item order is not RecBole's; build it with "
                "radius.adapters.recbole_dataset(train_data, valid_data, test_data)"
            )
        return dataset
    return recbole_dataset(dataset)


# --------------------------------------------------------------------------- models
def _linear(w: Tensor, b: Tensor | None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return lin


def _mlp(
    state: Mapping[str, Tensor], prefix: str, *, drop_in: bool, drop_out: bool
) -> nn.Sequential:
    """RecBole's ``mlp_layers`` (Linear, Tanh, ..., Linear) from a state dict, with the
    padding item's input column (``drop_in``) or output row (``drop_out``) removed."""
    idx = sorted(
        {int(m.group(1)) for k in state if (m := re.fullmatch(rf"{prefix}\.(\d+)\.weight", k))}
    )
    if not idx:
        raise CheckpointError(f"no {prefix}.N.weight entries in the RecBole state dict")
    layers: list[nn.Module] = []
    for n, k in enumerate(idx):
        w, b = state[f"{prefix}.{k}.weight"], state.get(f"{prefix}.{k}.bias")
        if drop_in and n == 0:
            w = w[:, 1:]
        if drop_out and n == len(idx) - 1:
            w, b = w[1:], (None if b is None else b[1:])
        layers.append(_linear(w, b))
        if n < len(idx) - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class _RecVAETrunk(RecVAEEncoder):
    """RecBole's RecVAE encoder as radius's ``RecVAEEncoder`` (the same densely connected
    swish / layer-norm layers), reading the already normalised and masked input that
    ``WrappedVAE`` gives it; L2.4 then certifies it as RecVAE."""

    def forward(self, xin: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self.forward_hidden(xin @ self.in_weight)


def _recvae_encoder(state: Mapping[str, Tensor]) -> _RecVAETrunk:
    w1 = state["encoder.fc1.weight"][:, 1:]  # (H, I - 1)
    hidden, d = int(w1.shape[0]), int(state["encoder.fc_mu.weight"].shape[0])
    n_layers = len([k for k in state if re.fullmatch(r"encoder\.ln\d+\.weight", k)])
    enc = _RecVAETrunk(int(w1.shape[1]), hidden, d, n_layers=n_layers)
    own = {
        "in_weight": w1.T.contiguous(),
        "in_bias": state["encoder.fc1.bias"],
        "fc_mu.weight": state["encoder.fc_mu.weight"],
        "fc_mu.bias": state["encoder.fc_mu.bias"],
        "fc_logvar.weight": state["encoder.fc_logvar.weight"],
        "fc_logvar.bias": state["encoder.fc_logvar.bias"],
    }
    for k in range(n_layers):
        own[f"lns.{k}.weight"] = state[f"encoder.ln{k + 1}.weight"]
        own[f"lns.{k}.bias"] = state[f"encoder.ln{k + 1}.bias"]
        if k:
            own[f"fcs.{k - 1}.weight"] = state[f"encoder.fc{k + 1}.weight"]
            own[f"fcs.{k - 1}.bias"] = state[f"encoder.fc{k + 1}.bias"]
    enc.load_state_dict(own)
    return enc


def _parts(name: str, state: Mapping[str, Tensor]) -> tuple[nn.Module, nn.Module, Tensor, Tensor]:
    """(encoder, decoder, padding row of the output layer, its bias) from a state dict."""
    state = {k: v.detach().cpu().float() for k, v in state.items()}
    if name == "MultiVAE":
        enc = _mlp(state, "encoder", drop_in=True, drop_out=False)
        dec = _mlp(state, "decoder", drop_in=False, drop_out=True)
        last = max(int(k.split(".")[1]) for k in state if re.fullmatch(r"decoder\.\d+\.weight", k))
        w_pad, b_pad = state[f"decoder.{last}.weight"][0], state[f"decoder.{last}.bias"][0]
        return enc, dec, w_pad, b_pad
    enc = _recvae_encoder(state)
    w, b = state["decoder.weight"], state["decoder.bias"]
    return enc, _linear(w[1:], b[1:]), w[0], b[0]


def _build(hyper: _Hyper, state: Mapping[str, Tensor], ds: Dataset, *, name: str) -> WrappedVAE:
    """The wrapped model of ``hyper.model`` from its state dict, in ``ds``'s item space."""
    if hyper.model not in SUPPORTED:
        raise ModelError(
            f"{name}: RecBole model {hyper.model!r} is not supported (supported: "
            f"{', '.join(SUPPORTED)})"
        )
    rb = ds.manifest["recbole"]
    key = "encoder.0.weight" if hyper.model == "MultiVAE" else "encoder.fc1.weight"
    if key not in state:
        raise CheckpointError(f"{name}: no {key!r} in the {hyper.model} state dict")
    n_pad = int(state[key].shape[1])
    if n_pad != int(rb["n_items_with_pad"]):
        raise ModelError(
            f"{name}: the {hyper.model} has {n_pad} items (RecBole's count, padding item "
            f"included), but dataset {ds.name!r} has {rb['n_items_with_pad']} "
            f"({ds.n_items} without the padding item): trained on another RecBole dataset?"
        )
    enc, dec, w_pad, b_pad = _parts(hyper.model, state)
    if not 0.0 <= hyper.dropout_prob < 1.0:
        raise ModelError(f"{name}: dropout_prob must lie in [0, 1), got {hyper.dropout_prob}")
    model = wrap(
        enc,
        dec,
        input_convention="normalize-mask",
        keep_rate=1.0 - hyper.dropout_prob,
        n_items=ds.n_items,
        posterior_scale=hyper.scale,
        kl_weight=hyper.kl_weight,
    )
    model.source = {  # what the adapter read, for reports
        "library": "recbole",
        "model": hyper.model,
        "dropout_prob": hyper.dropout_prob,
        "kl_weight": hyper.kl_weight,
        "kl_weight_from": hyper.kl_note,
        "posterior_scale_from": hyper.scale_note,
        "items": "RecBole ids 1..n-1 (padding item 0 dropped)",
    }
    if hyper.kl_weight is None:
        add_warning(model, f"KL weight unknown: {hyper.kl_note}")
    if hyper.scale_note.startswith("measured"):
        add_warning(model, f"posterior scale {hyper.scale_note}")
    _pad_mass_warning(model, ds, w_pad, b_pad)
    posterior_warnings(model, ds.train)
    return model


@torch.no_grad()
def _pad_mass_warning(model: WrappedVAE, ds: Dataset, w_pad: Tensor, b_pad: Tensor) -> None:
    """Warn when RecBole's softmax put more than PAD_MASS_MAX on the dropped padding item."""
    x = torch.from_numpy(np.asarray(ds.train[:2000].todense(), dtype=np.float32))
    mu, _ = model.encode(x)
    h = model.decoder_features(mu)  # (U, H)
    logits = model.decode(mu)  # (U, I - 1)
    pad = h @ w_pad + b_pad  # (U,)
    mass = torch.sigmoid(pad - torch.logsumexp(logits, dim=1))  # softmax share of the pad
    top = float(mass.max())
    model.source["pad_mass_max"] = top
    if top > PAD_MASS_MAX:
        add_warning(
            model,
            f"RecBole's padding item (dropped by the adapter) held up to {top:.3g} of the "
            f"softmax mass at a training user's posterior mean (> {PAD_MASS_MAX:g}): radius "
            "renormalises over the real items",
        )


def _measure_scale(model: nn.Module, d: int) -> float | None:
    """The std of ``model.reparameterize(0, 0)`` in training mode (seeded), or None."""
    fn = getattr(model, "reparameterize", None)
    if fn is None:
        return None
    was = model.training
    zeros = torch.zeros(4096, d)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model.train()
        try:
            z = fn(zeros, zeros)
        finally:
            model.train(was)
    return float(z.std())


def _scale(model: nn.Module | None, d: int) -> tuple[float, str]:
    version = _recbole_version()
    src = "RecBole 1.2.1's reparameterize (z = mu + 0.01 sigma eps)"
    if model is not None:
        seen = _measure_scale(model, d)
        if seen is not None and abs(seen / RECBOLE_SAMPLING_SCALE - 1.0) > _SCALE_TOLERANCE:
            return seen, (
                f"measured {seen:.4g} from the model's own reparameterize (RecBole 1.2.1's is "
                f"{RECBOLE_SAMPLING_SCALE:g}; installed recbole {version})"
            )
        if seen is not None:
            return RECBOLE_SAMPLING_SCALE, f"{src}; the model's own measured {seen:.4g}"
    if version not in (None, "1.2.1"):
        return RECBOLE_SAMPLING_SCALE, f"{src}; installed recbole {version} not checked"
    return RECBOLE_SAMPLING_SCALE, src


def _multvae_kl(cap: float, total: int, update: int | None) -> tuple[float | None, str]:
    if total <= 0:
        return float(cap), f"anneal_cap {cap:g} (no annealing: total_anneal_steps = 0)"
    if update is None:
        return None, (
            f"MultiVAE anneals beta = min(anneal_cap {cap:g}, update / {total}) and the "
            "checkpoint does not record update (the steps trained)"
        )
    beta = min(float(cap), update / float(total))
    return beta, f"min(anneal_cap {cap:g}, update {update} / total_anneal_steps {total})"


def _recvae_kl(gamma: float, beta: float, ds: Dataset) -> tuple[float, str]:
    if gamma:
        n_bar = float(np.diff(ds.train.indptr).mean())
        return gamma * n_bar, (
            f"gamma {gamma:g} x |x_u| per user (mean {n_bar:.4g} training items): RecVAE's KL "
            "is against its composite prior"
        )
    return float(beta), f"beta {beta:g} (gamma = 0): RecVAE's KL is against its composite prior"


def _check_history(model: nn.Module, ds: Dataset, name: str) -> None:
    """The model's training rows (``history_item_id``) must be the dataset's ``train``."""
    hist = getattr(model, "history_item_id", None)
    vals = getattr(model, "history_item_value", None)
    if hist is None:
        return
    rows = np.asarray(ds.manifest["recbole"]["train_user_index"])
    h = hist.detach().cpu().numpy()[rows]  # (U, H), 0 pads
    v = np.ones_like(h, dtype=np.float32) if vals is None else vals.detach().cpu().numpy()[rows]
    r, c = np.nonzero((h > 0) & (v != 0))
    seen = sp.csr_matrix(
        (np.ones(len(r), dtype=np.float32), (r, h[r, c] - 1)), shape=ds.train.shape
    )
    diff = np.flatnonzero(np.asarray((seen != ds.train).sum(axis=1)).ravel())
    if len(diff):
        raise ModelError(
            f"{name}: the model's training rows (history_item_id) differ from dataset "
            f"{ds.name!r}'s train matrix for {len(diff)} of {ds.train.shape[0]} users: it was "
            "trained on another split; build the dataset from the loaders it was trained on"
        )


def recbole(model: nn.Module, dataset: Any) -> WrappedVAE:
    """A RecBole ``MultiVAE`` or ``RecVAE`` as a radius model in RecBole's item space.

    Parameters
    ----------
    model : the trained RecBole model (``recbole.model.general_recommender.MultiVAE`` or
        ``RecVAE``), after ``Trainer.fit``; it is not modified (weights are copied).
    dataset : the ``Dataset`` from ``recbole_dataset(...)`` (preferred: the same object
        then goes to ``radius.verify.run_all``), or RecBole's own Dataset (converted by
        ``recbole_dataset``).

    Returns
    -------
    WrappedVAE with keep rate ``1 - dropout_prob``, input convention
    ``"normalize-mask"``, ``posterior_scale`` 0.01 (see the module doc), ``kl_weight``
    (MultiVAE: the annealed beta at the last step; RecVAE: gamma x mean |x_u|), lambda_A
    0 and no anchors (RecBole has no PIA); ``radius_warnings`` name anything degenerate;
    ``source`` records what was read.

    Raises
    ------
    ModelError
        Another RecBole model class; an item count (padding included) other than the
        dataset's; training rows other than the dataset's ``train``.
    """
    cls = type(model).__name__
    name = f"RecBole {cls}"
    if cls not in SUPPORTED:
        raise ModelError(
            f"{name} is not supported by radius.adapters.recbole (supported: "
            f"{', '.join(SUPPORTED)})"
        )
    ds = _as_radius_dataset(dataset)
    if int(getattr(model, "n_items", -1)) != int(ds.manifest["recbole"]["n_items_with_pad"]):
        raise ModelError(
            f"{name}: n_items = {getattr(model, 'n_items', None)} (padding item included), but "
            f"dataset {ds.name!r} has {ds.manifest['recbole']['n_items_with_pad']}: trained on "
            "another RecBole dataset?"
        )
    _check_history(model, ds, name)
    if cls == "MultiVAE":
        d = int(model.lat_dim) // 2
        kl, note = _multvae_kl(
            float(model.anneal_cap), int(model.total_anneal_steps), int(model.update)
        )
        dropout = float(model.drop_out)
    else:
        d = int(model.latent_dim)
        kl, note = _recvae_kl(float(model.gamma or 0.0), float(model.beta), ds)
        dropout = float(model.dropout_prob)
    scale, scale_note = _scale(model, d)
    hyper = _Hyper(cls, dropout, kl, note, scale, scale_note)
    return _build(hyper, model.state_dict(), ds, name=name)


def recbole_checkpoint(
    path: str | Path, dataset: Dataset, *, name: str | None = None
) -> WrappedVAE:
    """A RecBole checkpoint file (``Trainer``'s ``saved/MODEL-DATE.pth``) as a radius model.

    The file holds RecBole's ``Config`` (unpickling it needs recbole installed) and the
    state dict; ``dataset`` is the radius dataset of the same RecBole split (saved from
    ``recbole_dataset(...)`` with ``Dataset.save``). Same model as ``recbole(model,
    dataset)`` except that a MultiVAE's annealed KL weight is unknown when it anneals (the
    file does not record the steps trained; said in ``radius_warnings``).

    Raises
    ------
    CheckpointError
        An unreadable file, one without ``config`` and ``state_dict``, a config of another
        RecBole dataset than ``dataset``'s.
    """
    path = Path(path)
    name = name or str(path)
    ds = _as_radius_dataset(dataset)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as e:
        raise CheckpointError(
            f"{path}: needs the module {e.name!r} to read (a RecBole checkpoint pickles its "
            "Config): run with recbole installed"
        ) from e
    except Exception as e:  # noqa: BLE001 - corrupt or not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not (isinstance(payload, Mapping) and "config" in payload and "state_dict" in payload):
        raise CheckpointError(
            f"{path}: not a RecBole checkpoint (expected a dict with 'config' and 'state_dict')"
        )
    config, state = payload["config"], payload["state_dict"]
    cls = str(_config_get(config, "model"))
    want = ds.manifest["recbole"]["dataset"]
    got = _config_get(config, "dataset")
    if got is not None and str(got) != str(want):
        raise CheckpointError(
            f"{path}: RecBole model trained on dataset {got!r}, but the data is {want!r}"
        )
    dropout = float(_config_get(config, "dropout_prob") or 0.0)
    if cls == "MultiVAE":
        kl, note = _multvae_kl(
            float(_config_get(config, "anneal_cap")),
            int(_config_get(config, "total_anneal_steps")),
            None,
        )
    else:
        kl, note = _recvae_kl(
            float(_config_get(config, "gamma") or 0.0), float(_config_get(config, "beta")), ds
        )
    scale, scale_note = _scale(None, 0)
    model = _build(_Hyper(cls, dropout, kl, note, scale, scale_note), state, ds, name=name)
    model.source["checkpoint"] = str(path)
    model.source["epoch"] = payload.get("epoch")
    model.recorded_config = {"keep_rate": model.keep_rate, "lambda_a": 0.0}
    return model
