"""Adapters: verify a model trained by another library, in that model's own item space.

``recbole(model, dataset)`` (RecBole's ``MultiVAE`` and ``RecVAE``) and
``cornac(model, train_set)`` (cornac's ``VAECF``) turn the library's trained model into a
``radius.model.WrappedVAE`` that keeps the library's item universe and order (RecBole's
padding item 0 dropped, ids mapped through its token maps; cornac's ``iid_map``), with
the keep rate, input convention, KL weight and posterior sampling scale read from the
model and its config, and the warnings of anything degenerate in ``radius_warnings``.
``recbole_dataset(train, valid, test)`` and ``cornac_dataset(train_set, test_set)`` build
the radius ``Dataset`` of the split the model was trained on (``Dataset.from_matrices``,
weak generalisation: held-out interactions of the training users).

A RecBole MultiVAE trained by RecBole's own ``Trainer``::

    import radius
    from radius import adapters

    ds = adapters.recbole_dataset(train_data, valid_data, test_data)
    models = {"clean": adapters.recbole(clean_model, ds),
              "masking": adapters.recbole(masked_model, ds)}
    results = radius.verify.run_all("all", models=models, dataset=ds)

Neither library is imported by radius: the adapters read the objects they are given
(duck typing), so ``import radius`` and ``import radius.adapters`` work without them.
The weights are copied (the library's model is not changed); a model and a dataset of
different item universes are refused naming both counts.
"""

from __future__ import annotations

from radius.adapters._cornac import cornac, cornac_dataset
from radius.adapters._recbole import (
    RECBOLE_SAMPLING_SCALE,
    recbole,
    recbole_checkpoint,
    recbole_dataset,
)

__all__ = [
    "recbole",
    "recbole_dataset",
    "recbole_checkpoint",
    "RECBOLE_SAMPLING_SCALE",
    "cornac",
    "cornac_dataset",
    "ADAPTERS",
]

ADAPTERS: tuple[str, ...] = ("recbole",)
"""Libraries whose checkpoint files ``radius verify --adapter NAME`` reads."""
