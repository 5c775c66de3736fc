"""World-model denoiser: the named configurations, the forward pass, action injection, the clip layout."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

import configs
from configs.constants import ACTION_DIM
from configs.schema import TrainWMConfig, validate
from world_model.build import build_transformer, load_preset
from world_model.latents import PatchCodec, clip_layout, with_anchor
from world_model.model import ActionEncoder, actions_per_latent_frame, velocity

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
    assert torch.equal(velocity(t, x, sig, text), ref.float())


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
