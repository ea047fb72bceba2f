"""The content-keyed model cache: one thread per training, parallel training of missing
configs with the same weights as sequential training, warnings carried by the model,
and the verify context's training seeds and per-claim warnings."""

from __future__ import annotations

import pytest
import torch

from radius.training.cache import cache_path, get_model, train_many


def _state_hash(model: torch.nn.Module) -> list[bytes]:
    return [v.detach().cpu().numpy().tobytes() for v in model.state_dict().values()]


@pytest.mark.slow
def test_train_many_in_parallel_equals_one_at_a_time(tiny_dataset, tiny_config, tmp_path):
    """Two configs trained at once in two processes give bit-identical weights to the
    same configs trained one after the other in this process (one thread each)."""
    cfgs = [tiny_config.replace(epochs=2, seed=s) for s in (0, 1)]
    par, seq = tmp_path / "par", tmp_path / "seq"
    trained = train_many(tiny_dataset, cfgs, cache_dir=par, workers=2)
    assert trained == cfgs and all(cache_path(tiny_dataset, c, par).is_file() for c in cfgs)
    for c in cfgs:
        a = get_model(tiny_dataset, c, cache_dir=par)  # read from the cache
        b = get_model(tiny_dataset, c, cache_dir=seq)  # trained here
        assert _state_hash(a) == _state_hash(b)
    assert train_many(tiny_dataset, cfgs, cache_dir=par, workers=2) == []  # nothing missing


def test_get_model_restores_the_thread_count(tiny_dataset, tiny_config, tmp_path):
    before = torch.get_num_threads()
    get_model(tiny_dataset, tiny_config.replace(epochs=1), cache_dir=tmp_path)
    assert torch.get_num_threads() == before


def test_cap_warning_travels_with_the_model(tiny_dataset, tiny_config, tmp_path):
    """A model whose training hit its epoch cap carries the warning, trained or loaded."""
    cfg = tiny_config.replace(epochs=1, patience=5)
    with pytest.warns(RuntimeWarning, match="epoch cap"):
        fresh = get_model(tiny_dataset, cfg, cache_dir=tmp_path)
    loaded = get_model(tiny_dataset, cfg, cache_dir=tmp_path)
    for m in (fresh, loaded):
        assert len(m.radius_warnings) == 1 and "epoch cap" in m.radius_warnings[0]


def test_context_seed_models_and_used_warnings(tiny_dataset, tiny_config, tmp_path):
    """seed_models trains one model per training seed (base seed first); every model a
    claim touches is recorded with its warnings."""
    from radius.verify.base import VerifyOptions
    from radius.verify.context import VerifyContext

    ctx = VerifyContext(
        dataset=tiny_dataset,
        options=VerifyOptions(seeds=2, quick=True),
        base_config=tiny_config.replace(epochs=1, patience=5, seed=4),
        cache_dir=tmp_path,
    )
    assert ctx.training_seeds() == [4, 5]
    assert [c.seed for c in ctx.seed_configs(["clean"])] == [4, 5]
    ctx.begin_claim()
    with pytest.warns(RuntimeWarning):
        ms = ctx.seed_models("clean")
    assert len(ms) == 2 and ms[0] is ctx.model("clean")
    warns = ctx.used_warnings()
    assert len(warns) == 2 and warns[0].startswith("the 'clean' model: training hit")
    assert warns[1].startswith("the 'clean' model (seed 5): training hit")
    ctx.begin_claim()
    assert ctx.used_warnings() == []


def test_user_models_as_lists_per_seed(tiny_dataset):
    """A user gives one model per training seed as a list; a single model is one seed."""
    from radius.model.wrap import wrap
    from radius.verify.context import MissingModelError, VerifyContext

    def make():
        enc = torch.nn.Linear(tiny_dataset.n_items, 8)
        dec = torch.nn.Linear(4, tiny_dataset.n_items)

        class Enc(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = enc

            def forward(self, x):
                return self.lin(x).chunk(2, dim=-1)

        return wrap(Enc(), dec)

    a, b, c = make(), make(), make()
    ctx = VerifyContext(dataset=tiny_dataset, models={"clean": [a, b], "masking": c})
    assert ctx.seed_models("clean") == [a, b] and ctx.seed_models("masking") == [c]
    assert ctx.model("clean") is a
    with pytest.raises(MissingModelError, match="'pia'"):
        ctx.seed_models("pia")
