"""Converters from the original Wan and LVP checkpoint layouts to diffusers' WanTransformer3DModel.

Tiny random models are written in the source layouts exactly as the releases store them
(original ``config.json`` + single or sharded safetensors with an index, ``.pth``, a Lightning
``.ckpt`` for LVP), loaded back through the converters and compared bit for bit.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from safetensors.torch import load_file, save_file

from world_model.convert import (
    CONFIG_NAME,
    WAN_INDEX_NAME,
    WAN_WEIGHTS_NAME,
    CheckpointMismatchError,
    diffusers_config_from_wan,
    diffusers_to_lvp,
    diffusers_to_wan_original,
    load_lvp,
    load_wan_original,
    lvp_to_diffusers,
    main,
    wan_original_to_diffusers,
)

HEADS, HEAD_DIM, TEXT_DIM, LATENT = 2, 8, 16, 4
DIM = HEADS * HEAD_DIM
TINY = dict(patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, out_channels=LATENT,
            text_dim=TEXT_DIM, freq_dim=16, ffn_dim=32, num_layers=2)
# model_type of the original config -> extra diffusers kwargs. i2v: Wan2.1 (CLIP branch); i2v_wan22:
# Wan2.2 I2V (model_type "i2v" too, image only through the 4 mask + 4 condition latent channels).
VARIANTS = {
    "t2v": dict(in_channels=LATENT),
    "i2v": dict(in_channels=3 * LATENT, image_dim=12, added_kv_proj_dim=DIM),
    "flf2v": dict(in_channels=3 * LATENT, image_dim=12, added_kv_proj_dim=DIM, pos_embed_seq_len=6),
    "i2v_wan22": dict(in_channels=3 * LATENT),
}
IMAGE_TOKENS = {"i2v": (1, 3, 12), "flf2v": (2, 3, 12)}  # flf2v: first and last frame, 3 tokens each


def tiny_model(variant: str, seed: int = 0) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    model = WanTransformer3DModel(**TINY, **VARIANTS[variant])
    with torch.no_grad():  # every tensor random (norm weights too), so a swapped name cannot hide
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def model_inputs(variant: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    image = variant in IMAGE_TOKENS
    inputs = dict(
        hidden_states=torch.randn(1, VARIANTS[variant]["in_channels"], 3, 4, 4, generator=g),
        timestep=torch.tensor([417.0]),
        # diffusers splits image tokens from a 512-token text context (DIFFUSERS_TEXT_LEN)
        encoder_hidden_states=torch.randn(1, 512 if image else 7, TEXT_DIM, generator=g),
    )
    if image:
        inputs["encoder_hidden_states_image"] = torch.randn(*IMAGE_TOKENS[variant], generator=g)
    return inputs


@torch.no_grad()
def forward(model: WanTransformer3DModel, variant: str) -> torch.Tensor:
    return model(**model_inputs(variant), return_dict=False)[0]


def original_config(variant: str) -> dict:
    """The original ``config.json`` a Wan release ships for this model (WanModel's saved config)."""
    kw = {**TINY, **VARIANTS[variant]}
    return {
        "_class_name": "WanModel", "_diffusers_version": "0.30.0",
        "model_type": variant.removesuffix("_wan22"), "text_len": 512,
        "in_dim": kw["in_channels"], "dim": DIM, "ffn_dim": kw["ffn_dim"], "freq_dim": kw["freq_dim"],
        "out_dim": kw["out_channels"], "num_heads": HEADS, "num_layers": kw["num_layers"], "eps": 1e-6,
    }


def write_wan_release(folder: Path, model: WanTransformer3DModel, variant: str, *, shards: int) -> dict:
    """Write ``model`` as an original Wan release folder; return the original state dict."""
    folder.mkdir(parents=True, exist_ok=True)
    original = {k: v.contiguous() for k, v in diffusers_to_wan_original(model.state_dict()).items()}
    (folder / CONFIG_NAME).write_text(json.dumps(original_config(variant), indent=2))
    if shards == 1:
        save_file(original, folder / WAN_WEIGHTS_NAME, metadata={"format": "pt"})
        return original
    keys = sorted(original)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: original[k] for k in keys[i::shards]}
        save_file(part, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in original.values())
    (folder / WAN_INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return original


def lightning_checkpoint(state_dict: dict) -> dict:
    """An LVP-shaped Lightning checkpoint: the DiT beside the frozen VAE / CLIP / buffers and trainer state."""
    siblings = {"vae.encoder.conv1.weight": torch.randn(4, 3, 3, 3, 3), "clip.visual.proj": torch.randn(8, 4),
                "vae_mean": torch.randn(4), "vae_inv_std": torch.rand(4)}
    return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.4.0",
            "state_dict": {**state_dict, **siblings}, "optimizer_states": [], "lr_schedulers": []}


# ---------------------------------------------------------------------------------- key mapping


def test_mapping_names_the_original_layout():
    original = diffusers_to_wan_original(tiny_model("flf2v").state_dict())
    for key in ("patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.bias", "time_embedding.0.weight",
                "time_projection.1.weight", "head.head.weight", "head.modulation", "img_emb.proj.0.weight",
                "img_emb.proj.1.weight", "img_emb.proj.3.weight", "img_emb.proj.4.bias", "img_emb.emb_pos",
                "blocks.1.modulation", "blocks.1.self_attn.q.weight", "blocks.1.self_attn.o.bias",
                "blocks.1.self_attn.norm_q.weight", "blocks.1.cross_attn.k_img.weight",
                "blocks.1.cross_attn.norm_k_img.weight", "blocks.1.norm3.weight", "blocks.1.ffn.0.weight",
                "blocks.1.ffn.2.bias"):
        assert key in original, key
    assert not any(".norm2." in k or k.startswith("head.norm") for k in original)  # no affine there


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mapping_round_trips_and_agrees_with_diffusers_single_file_loader(variant):
    state_dict = tiny_model(variant).state_dict()
    original = diffusers_to_wan_original(state_dict)
    converted = wan_original_to_diffusers(original)
    assert converted.keys() == state_dict.keys()
    assert all(converted[k] is state_dict[k] for k in state_dict)  # a renaming: same tensors
    # diffusers' own single-file converter (independent implementation) gives the same names, except
    # that it leaves FLF2V's img_emb.emb_pos unmapped (diffusers' scripts/convert_wan_to_diffusers.py
    # maps it to condition_embedder.image_embedder.pos_embed, as we do)
    theirs = convert_wan_transformer_to_diffusers(dict(original))
    if variant == "flf2v":
        theirs["condition_embedder.image_embedder.pos_embed"] = theirs.pop("img_emb.emb_pos")
    assert theirs.keys() == converted.keys()
    assert all(theirs[k] is converted[k] for k in converted)


def test_unknown_keys_are_refused_in_both_directions():
    original = diffusers_to_wan_original(tiny_model("t2v").state_dict())
    original["blocks.0.self_attn.extra.weight"] = torch.zeros(1)
    original["model.diffusion_model.head.head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as err:
        wan_original_to_diffusers(original)
    assert "blocks.0.self_attn.extra.weight" in str(err.value)
    assert "model.diffusion_model.head.head.weight" in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="attn1.not_a_layer.weight"):
        diffusers_to_wan_original({"blocks.0.attn1.not_a_layer.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------------- config


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_inferred_from_original_config_and_tensors(variant):
    model = tiny_model(variant)
    cfg = diffusers_config_from_wan(original_config(variant), diffusers_to_wan_original(model.state_dict()))
    expected = {k: v for k, v in model.config.items() if not k.startswith("_") and k != "rope_max_seq_len"}
    assert cfg == expected


def test_config_that_disagrees_with_tensors_is_refused():
    original = diffusers_to_wan_original(tiny_model("i2v").state_dict())
    cfg = original_config("i2v")
    with pytest.raises(CheckpointMismatchError, match="num_layers"):
        diffusers_config_from_wan({**cfg, "num_layers": 3}, original)
    with pytest.raises(CheckpointMismatchError, match="ffn_dim"):
        diffusers_config_from_wan({**cfg, "ffn_dim": 64}, original)
    with pytest.raises(ValueError, match="image branch"):
        diffusers_config_from_wan({**cfg, "model_type": "t2v"}, original)
    with pytest.raises(ValueError, match="num_heads"):
        diffusers_config_from_wan({k: v for k, v in cfg.items() if k != "num_heads"}, original)


# ---------------------------------------------------------------------------------- loading Wan


@pytest.mark.parametrize("variant,shards", [("t2v", 1), ("t2v", 3), ("i2v", 2), ("flf2v", 1), ("i2v_wan22", 2)])
def test_wan_release_folder_loads_to_identical_outputs(tmp_path, variant, shards):
    source = tiny_model(variant)
    write_wan_release(tmp_path / "release", source, variant, shards=shards)
    loaded = load_wan_original(tmp_path / "release")  # config.json next to the weights
    # identical weights (below) are the guarantee; the forward passes agree to float rounding (a loaded
    # tensor's memory layout can pick another CPU kernel)
    torch.testing.assert_close(forward(loaded, variant), forward(source, variant), rtol=1e-5, atol=1e-5)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_wan_pth_file_loads(tmp_path):
    source = tiny_model("i2v")
    original = write_wan_release(tmp_path / "release", source, "i2v", shards=1)
    torch.save(original, tmp_path / "release" / "model.pth")
    (tmp_path / "release" / WAN_WEIGHTS_NAME).unlink()
    loaded = load_wan_original(tmp_path / "release" / "model.pth", tmp_path / "release" / CONFIG_NAME)
    torch.testing.assert_close(forward(loaded, "i2v"), forward(source, "i2v"), rtol=1e-5, atol=1e-5)


def test_extra_missing_and_misshapen_keys_are_refused_with_their_names(tmp_path):
    source = tiny_model("t2v")
    original = diffusers_to_wan_original(source.state_dict())
    config = dict(source.config)  # diffusers kwargs, so the loader itself is what refuses

    extra = {**original, "blocks.2.modulation": torch.zeros(1, 6, DIM)}
    save_file(extra, tmp_path / "extra.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        load_wan_original(tmp_path / "extra.safetensors", config)
    assert "blocks.2.modulation" in str(err.value) and "nothing loaded" in str(err.value)

    missing = {k: v for k, v in original.items() if k != "head.modulation"}
    save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"scale_shift_table \(checkpoint: head.modulation\)"):
        load_wan_original(tmp_path / "missing.safetensors", config)

    misshapen = {**original, "blocks.0.ffn.0.weight": torch.zeros(33, DIM)}
    save_file(misshapen, tmp_path / "misshapen.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"blocks.0.ffn.0.weight.*\(33, 16\)"):
        load_wan_original(tmp_path / "misshapen.safetensors", config)

    unknown = {**original, "blocks.0.self_attn.lora_A.weight": torch.zeros(2, DIM)}
    save_file(unknown, tmp_path / "unknown.safetensors")
    with pytest.raises(CheckpointMismatchError, match="blocks.0.self_attn.lora_A.weight"):
        load_wan_original(tmp_path / "unknown.safetensors", config)


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_wan_original(tmp_path / "nope")

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_wan_original(tmp_path / "empty")
    assert WAN_WEIGHTS_NAME in str(err.value) and WAN_INDEX_NAME in str(err.value)

    (tmp_path / "wan22" / "high_noise_model").mkdir(parents=True)
    (tmp_path / "wan22" / "low_noise_model").mkdir()
    with pytest.raises(FileNotFoundError, match="Wan2.2-A14B.*high_noise_model"):
        load_wan_original(tmp_path / "wan22")

    write_wan_release(tmp_path / "sharded", tiny_model("t2v"), "t2v", shards=2)
    (tmp_path / "sharded" / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="00002-of-00002"):
        load_wan_original(tmp_path / "sharded")

    write_wan_release(tmp_path / "noconfig", tiny_model("t2v"), "t2v", shards=1)
    (tmp_path / "noconfig" / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "noconfig" / CONFIG_NAME)):
        load_wan_original(tmp_path / "noconfig")

    with pytest.raises(FileNotFoundError, match="lvp_14B.ckpt"):
        load_lvp(tmp_path / "lvp_14B.ckpt", original_config("i2v"))


# ---------------------------------------------------------------------------------- LVP


@pytest.mark.parametrize("layout", ["raw", "compiled", "ema"])
def test_lvp_checkpoint_loads_to_identical_outputs(tmp_path, layout):
    source = tiny_model("i2v")
    if layout == "ema":  # raw weights differ from the EMA copy: the EMA copy must be chosen
        state = {**diffusers_to_lvp(tiny_model("i2v", seed=7).state_dict())["state_dict"],
                 **diffusers_to_lvp(source.state_dict(), ema=True)["state_dict"]}
    else:
        state = diffusers_to_lvp(source.state_dict())["state_dict"]
        if layout == "compiled":
            state = {k.replace("model.", "model._orig_mod.", 1): v for k, v in state.items()}
    torch.save(lightning_checkpoint(state), tmp_path / "lvp_14B.ckpt")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / CONFIG_NAME).write_text(json.dumps(original_config("i2v")))

    loaded = load_lvp(tmp_path / "lvp_14B.ckpt", tmp_path / "base")
    torch.testing.assert_close(forward(loaded, "i2v"), forward(source, "i2v"), rtol=1e-5, atol=1e-5)
    if layout == "ema":
        raw = load_lvp(tmp_path / "lvp_14B.ckpt", tmp_path / "base", use_ema=False)
        torch.testing.assert_close(forward(raw, "i2v"), forward(tiny_model("i2v", seed=7), "i2v"), rtol=1e-5, atol=1e-5)


def test_lvp_without_model_prefix_is_refused():
    ckpt = lightning_checkpoint({"net.blocks.0.modulation": torch.zeros(1, 6, DIM)})
    with pytest.raises(CheckpointMismatchError, match="no tensor under 'model.'"):
        lvp_to_diffusers(ckpt)


# ---------------------------------------------------------------------------------- command line


def test_cli_writes_a_diffusers_checkpoint(tmp_path):
    source = tiny_model("i2v")
    write_wan_release(tmp_path / "release", source, "i2v", shards=2)
    assert main(["--from", "wan", "--src", str(tmp_path / "release"), "--dst", str(tmp_path / "wan_out")]) == 0
    assert (tmp_path / "wan_out" / CONFIG_NAME).is_file() and (tmp_path / "wan_out" / WAN_WEIGHTS_NAME).is_file()
    reloaded = WanTransformer3DModel.from_pretrained(tmp_path / "wan_out")
    torch.testing.assert_close(forward(reloaded, "i2v"), forward(source, "i2v"), rtol=1e-5, atol=1e-5)

    torch.save(lightning_checkpoint(diffusers_to_lvp(source.state_dict())["state_dict"]), tmp_path / "lvp.ckpt")
    argv = ["--from", "lvp", "--src", str(tmp_path / "lvp.ckpt"), "--dst", str(tmp_path / "lvp_out"),
            "--config", str(tmp_path / "release" / CONFIG_NAME), "--dtype", "bfloat16"]
    assert main(argv) == 0
    saved = load_file(tmp_path / "lvp_out" / WAN_WEIGHTS_NAME)
    assert torch.equal(saved["proj_out.weight"], source.state_dict()["proj_out.weight"].bfloat16())
    # the modules diffusers keeps in float32 stay float32 (modulation tables, time embedder, norms)
    assert saved["blocks.0.scale_shift_table"].dtype == torch.float32
    assert saved["condition_embedder.time_embedder.linear_1.weight"].dtype == torch.float32
    assert saved["blocks.0.attn1.to_q.weight"].dtype == torch.bfloat16


def test_cli_errors_name_the_missing_path(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    assert main(["--from", "lvp", "--src", str(tmp_path / "x.ckpt"), "--dst", str(tmp_path / "out")]) == 1
    assert "--config" in caplog.text
    caplog.clear()
    assert main(["--from", "wan", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "out")]) == 1
    assert str(tmp_path / "missing") in caplog.text and WAN_WEIGHTS_NAME in caplog.text
    assert not (tmp_path / "out").exists()


def test_python_dash_m_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "world_model.convert", "--from", "wan", "--src", str(tmp_path / "absent"),
         "--dst", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1
    assert str(tmp_path / "absent") in result.stderr
