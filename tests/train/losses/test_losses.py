"""The losses of the `full` method: the registry `train.loss.name` picks from, each loss's
config and the sentence-transformers loss it builds."""

from __future__ import annotations

import pytest
import torch

from embedtune.config import parse_section
from embedtune.errors import EmbedtuneError
from embedtune.train.losses import LOSSES, LossConfig, build_loss, loss_config
from embedtune.train.losses.cached_mnrl import CachedMNRL, CachedMNRLConfig
from embedtune.train.losses.mnrl import MNRL, MNRLConfig
from embedtune.train.methods.base import method_config
from tests.helpers import cfg


def test_the_registry_finds_every_loss_module():
    assert LOSSES.key == "train.loss.name"
    assert LOSSES.names() == ["cached_mnrl", "fusion_margin_mse", "gist", "margin_mse", "mnrl"]
    assert LOSSES.get("mnrl") is MNRL and LOSSES.get("cached_mnrl") is CachedMNRL


def test_the_full_group_uses_mnrl():
    loss = cfg("train", "train=full").loss
    assert type(loss) is MNRLConfig
    assert loss == MNRLConfig(name="mnrl", scale=20.0)


def test_cached_mnrl_is_picked_with_the_loss_group():
    train_cfg = cfg("train", "train=full", "train/loss=cached_mnrl")
    assert type(train_cfg.loss) is CachedMNRLConfig
    assert (train_cfg.loss.scale, train_cfg.loss.mini_batch_size) == (20.0, 32)
    # The loss's own keys survive a dump (what params logging and the test helper rely on).
    assert train_cfg.model_dump()["loss"] == {
        "name": "cached_mnrl",
        "scale": 20.0,
        "mini_batch_size": 32,
    }
    updated = cfg("train", "train=full", "train/loss=cached_mnrl", epochs=1)
    assert updated.loss == train_cfg.loss


@pytest.mark.parametrize(
    ("raw", "schema"),
    [
        ({"name": "mnrl", "scale": 5.0}, MNRLConfig),
        ({"name": "cached_mnrl", "scale": 5.0, "mini_batch_size": 4}, CachedMNRLConfig),
    ],
)
def test_loss_config_validates_with_the_named_loss(raw, schema):
    loss = loss_config(raw)
    assert type(loss) is schema and isinstance(loss, LossConfig)
    assert loss.model_dump() == raw


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"name": "magic", "scale": 1.0}, "train.loss.name='magic' is not known"),
        ({"scale": 1.0}, "missing key train.loss.name"),
    ],
)
def test_an_unknown_loss_names_train_loss_name(raw, problem):
    with pytest.raises(EmbedtuneError) as err:
        loss_config(raw)
    assert (
        str(err.value)
        == f"{problem} (known: cached_mnrl, fusion_margin_mse, gist, margin_mse, mnrl)"
    )


def test_a_loss_that_is_not_a_mapping_is_named():
    with pytest.raises(EmbedtuneError, match=r"^train.loss must be a mapping, got 'mnrl'$"):
        loss_config("mnrl")


def parse_full(loss: dict):
    raw = cfg("train", "train=full").model_dump()
    raw["loss"] = loss
    return parse_section("train", raw, method_config)


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"name": "magic", "scale": 1.0}, r"train\.loss\.name='magic' is not known"),
        ({"name": "mnrl", "scale": 1.0, "mini_batch_size": 4}, r"unknown key train\.loss\.mini"),
        ({"name": "cached_mnrl", "scale": 1.0}, r"missing key train\.loss\.mini_batch_size"),
        ({"name": "mnrl", "scale": 0.0}, r"train\.loss\.scale must be greater than 0, got 0\.0"),
        (
            {"name": "cached_mnrl", "scale": 1.0, "mini_batch_size": 0},
            r"train\.loss\.mini_batch_size must be greater than 0",
        ),
    ],
)
def test_bad_loss_in_the_train_section(loss, message):
    with pytest.raises(EmbedtuneError, match=message):
        parse_full(loss)


def test_a_good_loss_in_the_train_section():
    parsed = parse_full({"name": "cached_mnrl", "scale": 10.0, "mini_batch_size": 8})
    assert parsed.loss == CachedMNRLConfig(name="cached_mnrl", scale=10.0, mini_batch_size=8)


def test_mnrl_builds(minilm):
    from sentence_transformers.sentence_transformer import losses

    loss = build_loss(minilm, loss_config({"name": "mnrl", "scale": 7.0}))
    assert type(loss) is losses.MultipleNegativesRankingLoss
    assert loss.scale == 7.0 and loss.model is minilm


def test_cached_mnrl_builds(minilm):
    from sentence_transformers.sentence_transformer import losses

    loss_cfg = cfg("train", "train=full", "train/loss=cached_mnrl").loss
    loss = build_loss(minilm, loss_cfg.model_copy(update={"mini_batch_size": 3}))
    assert type(loss) is losses.CachedMultipleNegativesRankingLoss
    assert (loss.scale, loss.mini_batch_size) == (20.0, 3) and loss.model is minilm


def test_every_registered_loss_builds_from_its_conf_file(minilm):
    from torch import nn

    for name in LOSSES.names():
        loss_cfg = cfg("train", "train=full", f"train/loss={name}").loss
        assert loss_cfg.name == name
        assert isinstance(build_loss(minilm, loss_cfg), nn.Module)


def test_gist_guides_with_a_frozen_copy_of_the_base_model(minilm):
    import copy

    from sentence_transformers.sentence_transformer import losses

    model = copy.deepcopy(minilm)
    loss = build_loss(model, cfg("train", "train=full", "train/loss=gist").loss)
    assert type(loss) is losses.GISTEmbedLoss
    assert loss.guide is not model and loss.temperature == pytest.approx(1 / 20.0)
    assert not any(p.requires_grad for p in loss.guide.parameters())
    with torch.no_grad():  # training the model later leaves the guide as the base model was
        next(model.parameters()).add_(1.0)
    base, guide = next(minilm.parameters()), next(loss.guide.parameters())
    assert torch.equal(base, guide) and not torch.equal(base, next(model.parameters()))


def test_margin_mse_needs_scores_and_builds(minilm):
    from sentence_transformers.sentence_transformer import losses

    loss_cfg = cfg("train", "train=full", "train/loss=margin_mse").loss
    assert loss_cfg.needs_scores and not cfg("train", "train=full").loss.needs_scores
    assert type(build_loss(minilm, loss_cfg)) is losses.MarginMSELoss
