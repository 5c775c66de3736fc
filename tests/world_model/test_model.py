"""World-model denoiser: the named configurations, the forward pass, action injection, the clip layout."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

import configs
from configs.constants import ACTION_DIM
from configs.schema import TrainWMConfig, validate
from world_model.build import build_transformer, load_preset
from world_model.latents import PatchCodec, clip_layout, codec_detail, decode_latents, encode_video, with_anchor
from world_model.model import ActionEncoder, actions_per_latent_frame, i2v_condition, velocity

# Parameter counts of the published architectures (diffusers layout), from their configs:
# Wan2.1-T2V-1.3B 1.42B, Wan2.1-I2V-14B 16.4B (14B + the image cross-attention), Wan2.2-TI2V-5B 5.0B.
PUBLISHED = {
    "wan2.1-1.3b": dict(params=(1.3e9, 1.45e9), dim=1536, layers=30, in_channels=16),
    "wan2.1-14b": dict(params=(14.0e9, 16.5e9), dim=5120, layers=40, in_channels=36),
    "wan2.2-5b": dict(params=(4.9e9, 5.1e9), dim=3072, layers=30, in_channels=48),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_large_presets_match_published_architecture_on_meta_device(name):
    want = PUBLISHED[name]
    with torch.device("meta"):
        t = build_transformer(load_preset(name))
    n = sum(p.numel() for p in t.parameters())
    assert want["params"][0] <= n <= want["params"][1], f"{name}: {n / 1e9:.2f}B parameters"
    assert t.patch_embedding.weight.shape == (want["dim"], want["in_channels"], 1, 2, 2)
    assert len(t.blocks) == want["layers"]
    assert t.blocks[0].ffn.net[0].proj.weight.shape[1] == want["dim"]


def _tiny_transformer(in_channels=16, **kw):
    torch.manual_seed(0)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8,
                                 in_channels=in_channels, out_channels=16, text_dim=12, freq_dim=16, ffn_dim=32,
                                 num_layers=2, rope_max_seq_len=32, **kw).eval()


@torch.no_grad()
def test_velocity_equals_diffusers_forward_with_per_token_timesteps():
    t = _tiny_transformer()
    x, text = torch.randn(2, 16, 3, 4, 6), torch.randn(2, 5, 12)
    sig = torch.rand(2, 3)
    ref = t(x, (sig * 1000).repeat_interleave(2 * 3, dim=1), text, return_dict=False)[0]
    for i in range(2):  # velocity() embeds one sample at a time, as diffusers does at batch 1
        one = t(x[i:i + 1], (sig[i:i + 1] * 1000).repeat_interleave(2 * 3, dim=1), text[i:i + 1], return_dict=False)[0]
        assert torch.equal(velocity(t, x[i:i + 1], sig[i:i + 1], text[i:i + 1]), one.float())
    torch.testing.assert_close(velocity(t, x, sig, text), ref.float(), rtol=1e-5, atol=1e-6)  # kernel rounding


@torch.no_grad()
def test_zero_initialised_actions_leave_outputs_bit_identical():
    t = _tiny_transformer()
    enc = ActionEncoder(embed_dim=16, hidden_dim=8)
    x, text, sig = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 5, 12), torch.rand(2, 3)
    actions = actions_per_latent_frame(torch.randn(2, 9, ACTION_DIM), 4)
    base = velocity(t, x, sig, text)
    assert torch.equal(velocity(t, x, sig, text, action_encoder=enc, actions=actions), base)
    # once trained, actions change the output, and the mask switches them off per sample
    torch.nn.init.normal_(enc.linear_2.weight)
    with_actions = velocity(t, x, sig, text, action_encoder=enc, actions=actions, action_mask=torch.tensor([1., 0.]))
    assert not torch.allclose(with_actions[0], base[0])
    assert torch.equal(with_actions[1], base[1])


def test_actions_per_latent_frame_layout():
    a = torch.arange(9, dtype=torch.float32).view(1, 9, 1).expand(1, 9, ACTION_DIM)
    per = actions_per_latent_frame(a, 4)
    assert per.shape == (1, 3, 4, ACTION_DIM)
    assert per[0, :, :, 0].tolist() == [[0, 0, 0, 0], [1, 2, 3, 4], [5, 6, 7, 8]]
    with pytest.raises(ValueError, match="1 \\+ 4\\*k"):
        actions_per_latent_frame(torch.zeros(1, 8, ACTION_DIM), 4)


def test_action_encoder_rejects_wrong_action_dimension():
    enc = ActionEncoder(embed_dim=16, hidden_dim=8)
    with pytest.raises(ValueError, match="14"):
        enc(torch.zeros(1, 2, 4, 7))


def test_velocity_rejects_wrong_channels_and_sigma_shape():
    t = _tiny_transformer()
    with pytest.raises(ValueError, match="16 input channels"):
        velocity(t, torch.randn(1, 8, 2, 4, 4), torch.zeros(1, 2), torch.randn(1, 3, 12))
    with pytest.raises(ValueError, match="one noise level per latent frame"):
        velocity(t, torch.randn(1, 16, 2, 4, 4), torch.zeros(1, 3), torch.randn(1, 3, 12))


def test_patch_codec_is_exactly_invertible():
    codec = PatchCodec(patch=8, latents_mean=[0.1] * 192, latents_std=[0.5] * 192)
    video = torch.rand(2, 3, 5, 32, 48) * 2 - 1
    z = codec.encode(video)
    assert z.shape == (2, 192, 5, 4, 6)
    assert (codec.decode(z) - video).abs().max() < 1e-6
    with pytest.raises(ValueError, match="divisible by 8"):
        codec.encode(torch.zeros(1, 3, 1, 30, 32))


def test_fitted_patch_codec_is_exact_on_its_span_and_saves_its_basis(tmp_path):
    g = torch.Generator().manual_seed(0)
    patterns = torch.rand(4, 3, 8, 8, generator=g)  # every block is a mix of 4 patterns: a 4-D affine span
    weights = torch.rand(40, 4, 4, 4, generator=g)  # 40 frames of 4x4 blocks
    frames = torch.einsum("nkij,kcyx->nciyjx", weights / weights.sum(1, keepdim=True), patterns).reshape(40, 3, 32, 32)
    codec = PatchCodec.fit(frames, patch=8, components=3)  # mixes of 4 patterns summing to 1: 3-D around the mean
    assert codec.z_dim == 3 and codec.basis.shape == (3, 192)
    torch.testing.assert_close(codec.basis @ codec.basis.T, torch.eye(3), atol=1e-5, rtol=0)
    video = frames[:6].reshape(2, 3, 3, 32, 32).transpose(1, 2) * 2 - 1  # (B, 3, T, H, W)
    z = codec.encode(video)
    assert z.shape == (2, 3, 3, 4, 4)
    assert (codec.decode(z) - video).abs().max() < 1e-5
    var = codec.encode(frames[None].transpose(1, 2) * 2 - 1).var(dim=(0, 2, 3, 4))
    assert abs(var.mean().item() - 1) < 0.05 and var[0] > var[2]  # one scale: unit variance on average
    codec.save_pretrained(tmp_path / "vae")
    loaded = PatchCodec.from_pretrained(tmp_path / "vae")
    assert torch.equal(loaded.basis, codec.basis) and torch.equal(loaded.encode(video), z)


def test_codec_detail_is_what_the_span_leaves_out():
    g = torch.Generator().manual_seed(1)
    codec = PatchCodec.fit(torch.rand(50, 3, 32, 32, generator=g), patch=8, components=20)
    frames = torch.rand(2, 3, 3, 32, 32, generator=g)  # (B, T, 3, H, W) in [0, 1]
    detail = codec_detail(codec, frames)
    projected = decode_latents(codec, encode_video(codec, frames), detail)
    torch.testing.assert_close(projected, frames, atol=1e-5, rtol=0)  # span + detail = the frames
    assert detail.abs().mean() > 0.05  # 20 of 192 values per block leave a lot out
    with pytest.raises(ValueError, match="needs a PatchCodec with 'components'"):
        codec_detail(PatchCodec(patch=8), frames)
    with pytest.raises(ValueError, match="components=200 must be in 1..192"):
        PatchCodec(patch=8, components=200)


def test_future_condition_holds_the_newest_history_latent():
    hist = torch.randn(2, 5, 3, 4, 4)
    cond = i2v_condition(hist, 3, 6, "last_history")
    assert cond.shape == (2, 4 + 5, 6, 4, 4)
    assert torch.equal(cond[:, :4, :3], torch.ones(2, 4, 3, 4, 4)) and not cond[:, :4, 3:].any()
    assert torch.equal(cond[:, 4:, :3], hist) and torch.equal(cond[:, 4:, 3:], hist[:, :, 2:3].expand(2, 5, 3, 4, 4))
    assert not i2v_condition(hist, 3, 6)[:, 4:, 3:].any()  # Wan's layout: zeros
    with pytest.raises(ValueError, match="expected one of"):
        i2v_condition(hist, 3, 6, "mean")


def test_clip_layout_and_anchor():
    assert clip_layout(4, 8, 4) == (2, 2)
    assert clip_layout(4, 8, 1) == (5, 8)
    with pytest.raises(ValueError, match="history frames: 3.*multiple of the VAE's temporal stride 4"):
        clip_layout(3, 8, 4)
    frames = torch.arange(4).view(1, 4)
    assert with_anchor(frames).tolist() == [[0, 0, 1, 2, 3]]


@pytest.mark.parametrize("name", ["tiny", *sorted(PUBLISHED)])
def test_every_preset_composes_into_the_training_config(name):
    cfg = validate(configs.compose("train_wm", [f"world_model={name}"]), TrainWMConfig)
    assert cfg.world_model == load_preset(name)
