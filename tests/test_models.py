"""ViViT-FE model: shapes, gradients, freezing, adapters, position embeddings, weight loading."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from conftest import TINY_BACKBONE, tiny_config
from safetensors.torch import save_file

from sfa_cache.errors import SfaError
from sfa_cache.models.adapter import build_adapter
from sfa_cache.models.config import AdapterConfig, SpatialConfig, TemporalConfig, ViViTConfig, temporal_preset
from sfa_cache.models.spatial import SpatialTransformer, load_backbone_weights
from sfa_cache.models.temporal import TemporalTransformer, resize_temporal_pos_embed
from sfa_cache.models.vivit import ViViTFE, load_vivit_state_dict
from sfa_cache.settings_io import config_from_dict, config_to_dict


def _clip(b: int = 2, t: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(b, t, 3, size, size)


def test_forward_shapes_and_finite() -> None:
    model = ViViTFE(tiny_config(num_classes=5, frames=4))
    x = _clip()
    tokens = model.encode_frames(x)
    assert tokens.shape == (2, 4, 192)
    feats = model.forward_features(x)
    assert feats.shape == (2, 192)
    logits = model.forward_head(feats)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(model(x), logits)


def test_spatial_is_per_frame_cls_and_chunking_does_not_change_it() -> None:
    cfg = SpatialConfig(backbone=TINY_BACKBONE, image_size=32, frame_chunk=1)
    chunked = SpatialTransformer(cfg).eval()
    whole = SpatialTransformer(dataclasses.replace(cfg, frame_chunk=1000)).eval()
    whole.load_state_dict(chunked.state_dict())
    x = _clip(b=2, t=5)
    out = chunked(x)
    torch.testing.assert_close(out, whole(x))
    # Frame (1, 3) alone through the timm backbone gives the same CLS pre-logits.
    torch.testing.assert_close(out[1, 3], chunked.backbone(x[1, 3:4])[0])


@pytest.mark.parametrize("adapter", ["none", "mlp", "residual"])
def test_every_trainable_parameter_gets_a_gradient_and_frozen_ones_none(adapter: str) -> None:
    model = ViViTFE(tiny_config(adapter=adapter)).freeze_spatial()
    model.train()
    assert not model.spatial.training, "a frozen spatial ViT stays in eval mode"
    # Make the head non-zero so that gradients reach the layers before it.
    torch.nn.init.normal_(model.temporal.head.weight)
    if adapter == "residual":  # zero-init last layer: give fc1 a path to the loss
        torch.nn.init.normal_(model.adapter.fc2.weight)
    model(_clip()).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        if name.startswith("spatial."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unfrozen_model_trains_spatial_too() -> None:
    model = ViViTFE(tiny_config())
    torch.nn.init.normal_(model.temporal.head.weight)
    model(_clip()).sum().backward()
    assert model.spatial.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


def test_residual_adapter_is_identity_at_init() -> None:
    plain = ViViTFE(tiny_config(adapter="none")).eval()
    residual = ViViTFE(tiny_config(adapter="residual")).eval()
    residual.load_state_dict(plain.state_dict(), strict=False)
    torch.nn.init.normal_(plain.temporal.head.weight)
    residual.temporal.head.load_state_dict(plain.temporal.head.state_dict())
    x = _clip()
    torch.testing.assert_close(residual(x), plain(x), rtol=0, atol=0)


def test_mlp_adapter_changes_the_function() -> None:
    model = ViViTFE(tiny_config(adapter="mlp")).eval()
    tokens = torch.randn(2, 4, 192)
    assert not torch.allclose(model.adapter(tokens), tokens)


def test_pos_embed_resize_to_same_length_is_identity() -> None:
    pos = torch.randn(1, 9, 16)
    assert resize_temporal_pos_embed(pos, 8) is pos


def test_pos_embed_resize_keeps_cls_and_endpoints() -> None:
    pos = torch.randn(1, 1 + 8, 16)
    out = resize_temporal_pos_embed(pos, 32)
    assert out.shape == (1, 33, 16)
    torch.testing.assert_close(out[:, 0], pos[:, 0])  # CLS slot untouched
    torch.testing.assert_close(out[:, 1], pos[:, 1])  # first frame -> first frame
    torch.testing.assert_close(out[:, -1], pos[:, -1])  # last frame -> last frame
    # Linear: a constant-slope table stays constant-slope.
    ramp = torch.arange(8.0).view(1, 8, 1).expand(1, 8, 4)
    out = resize_temporal_pos_embed(torch.cat([torch.zeros(1, 1, 4), ramp], 1), 15)
    torch.testing.assert_close(out[0, 1:, 0], torch.linspace(0, 7, 15))


def test_state_dict_trained_at_f1_loads_into_f2_model() -> None:
    f8 = ViViTFE(tiny_config(frames=8, adapter="none"))
    f32 = ViViTFE(tiny_config(frames=32, adapter="mlp"))
    load_vivit_state_dict(f32, f8.state_dict(), allow_missing=("adapter.",))
    torch.testing.assert_close(f32.temporal.pos_embed, resize_temporal_pos_embed(f8.temporal.pos_embed, 32))
    torch.testing.assert_close(f32.spatial.backbone.cls_token, f8.spatial.backbone.cls_token)
    assert f32(_clip(b=1, t=32)).shape == (1, 5)
    with pytest.raises(SfaError, match="does not fit"):
        load_vivit_state_dict(f32, f8.state_dict())  # adapter missing and not allowed


def test_temporal_rejects_wrong_frame_count() -> None:
    t = TemporalTransformer(TemporalConfig(num_frames=4, depth=1), 32, 3)
    with pytest.raises(SfaError, match="built for 4 frames got 6"):
        t(torch.randn(1, 6, 32))


def test_config_json_round_trip_and_unknown_keys() -> None:
    cfg = tiny_config(adapter="mlp")
    data = config_to_dict(cfg)
    import json

    again = config_from_dict(ViViTConfig, json.loads(json.dumps(data)))
    assert again == cfg
    data["temporal"]["depht"] = 3
    with pytest.raises(SfaError, match="unknown key.*depht"):
        config_from_dict(ViViTConfig, data)
    with pytest.raises(SfaError, match="adapter kind"):
        config_from_dict(ViViTConfig, {"num_classes": 2, "adapter": {"kind": "lora"}})


def test_built_model_config_records_resolved_backbone_settings() -> None:
    model = ViViTFE(tiny_config())
    assert model.cfg.embed_dim == 192
    assert model.cfg.spatial.mean == (0.5, 0.5, 0.5)  # from timm's pretrained cfg for this ViT


def test_temporal_presets() -> None:
    cfg = temporal_preset("B", 768, num_frames=32)
    assert (cfg.depth, cfg.num_heads, cfg.mlp_dim) == (12, 12, 3072)
    assert temporal_preset("g", 1408, 8, depth=4).depth == 4
    with pytest.raises(SfaError, match="width 1024 but the spatial backbone gives 192"):
        temporal_preset("L", 192, 8)


def test_model_without_spatial_runs_on_tokens() -> None:
    cfg = dataclasses.replace(tiny_config(adapter="mlp"), embed_dim=192)
    model = ViViTFE(cfg, with_spatial=False)
    assert model.spatial is None
    assert model.forward_head(model.forward_tokens(torch.randn(3, 4, 192))).shape == (3, 5)


@pytest.mark.parametrize("bad, match", [
    (dict(backbone="vit_nonexistent_patch99"), "unknown backbone"),
    (dict(image_size=40), "not divisible by vit_tiny_patch16_224's patch size 16"),
    (dict(backbone="resnet18"), "not a ViT|cannot be used"),
])
def test_bad_backbone_settings(bad: dict, match: str) -> None:
    with pytest.raises(SfaError, match=match):
        SpatialTransformer(dataclasses.replace(SpatialConfig(backbone=TINY_BACKBONE, image_size=32), **bad))


# --- loading image checkpoints from local files -------------------------------------------------

@pytest.fixture(scope="module")
def image_model() -> torch.nn.Module:
    """A timm image classifier at 224 px whose weights play the role of an ImageNet checkpoint."""
    torch.manual_seed(1)
    return timm.create_model(TINY_BACKBONE, num_classes=10)


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "bin-wrapped"])
def test_backbone_weights_from_local_file(tmp_path, image_model, fmt: str) -> None:
    sd = image_model.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "pth":
        path = tmp_path / "w.pth"
        torch.save(sd, path)
    else:  # a training checkpoint: {'state_dict': {'module.<key>': ...}}
        path = tmp_path / "w.bin"
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    model = ViViTFE(tiny_config(image_size=32), backbone_weights=path)
    bb = model.spatial.backbone
    torch.testing.assert_close(bb.blocks[5].mlp.fc1.weight, sd["blocks.5.mlp.fc1.weight"])
    torch.testing.assert_close(bb.cls_token, sd["cls_token"])
    # Patch position embeddings were resampled from 14x14 (224 px) to 2x2 (32 px).
    assert bb.pos_embed.shape == (1, 1 + 4, 192)
    torch.testing.assert_close(bb.pos_embed[:, 0], sd["pos_embed"][:, 0])


def test_backbone_weights_mismatch_names_the_keys(tmp_path, image_model) -> None:
    sd = {k: v for k, v in image_model.state_dict().items() if not k.startswith("blocks.11.")}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(SfaError, match=r"missing blocks\.11\.norm1\.weight"):
        load_backbone_weights(SpatialTransformer(SpatialConfig(TINY_BACKBONE, 32)).backbone, path)
    small = timm.create_model("vit_small_patch16_224", num_classes=0)
    path = tmp_path / "small.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(SfaError, match=r"shape mismatch .*cls_token \(1, 1, 384\) vs \(1, 1, 192\)"):
        load_backbone_weights(SpatialTransformer(SpatialConfig(TINY_BACKBONE, 32)).backbone, path)


def test_backbone_weights_bad_files(tmp_path) -> None:
    bb = SpatialTransformer(SpatialConfig(TINY_BACKBONE, 32)).backbone
    with pytest.raises(SfaError, match="weights file not found"):
        load_backbone_weights(bb, tmp_path / "nope.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SfaError, match="cannot read weights file"):
        load_backbone_weights(bb, junk)


def test_temporal_pos_embed_init_scale() -> None:
    """ViT's 0.02 by default; a larger scale (the demo's 1.0) on request, recorded in the config."""
    default = TemporalTransformer(TemporalConfig(num_frames=512), 64, 3)
    assert 0.017 < float(default.pos_embed.detach().std()) < 0.023
    large = TemporalTransformer(TemporalConfig(num_frames=512, pos_embed_std=1.0), 64, 3)
    assert 0.8 < float(large.pos_embed.detach().std()) < 0.95  # N(0, 1) truncated at +-2 has std 0.88


def test_an_unknown_adapter_kind_is_refused_not_an_identity() -> None:
    with pytest.raises(SfaError, match="adapter kind"):
        AdapterConfig("mlpp")
    cfg = AdapterConfig("mlp")
    cfg.kind = "mlpp"  # past the config's own check, e.g. a config built field by field
    with pytest.raises(SfaError, match="unknown adapter kind 'mlpp'"):
        build_adapter(cfg, 8)
    assert isinstance(build_adapter(AdapterConfig("none"), 8), torch.nn.Identity)
