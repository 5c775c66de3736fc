"""Convert original Wan2.1/2.2 and LVP checkpoints into diffusers' ``WanTransformer3DModel``.

Two source layouts:

* **Original Wan** (``Wan-Video/Wan2.1``, ``Wan-Video/Wan2.2``): the ``WanModel`` state dict that the
  official releases ship as ``diffusion_pytorch_model.safetensors`` (1.3B) or
  ``diffusion_pytorch_model-0000i-of-0000n.safetensors`` + ``diffusion_pytorch_model.safetensors.index.json``
  (14B), next to an original ``config.json`` (``"_class_name": "WanModel"``). Wan2.2-A14B keeps one such
  folder per expert (``high_noise_model/``, ``low_noise_model/``): convert each on its own.
* **LVP** ("Large Video Planner Enables Generalizable Robot Control", arXiv 2512.15840): a PyTorch
  Lightning ``.ckpt`` of a fine-tuned Wan2.1-I2V-14B whose LightningModule holds the ``WanModel`` as
  ``self.model``; see :func:`lvp_to_diffusers` for what was found about it.

The mapping is a pure renaming (no tensor is reshaped, split or cast); see :data:`TOP_LEVEL_MODULES`
and :data:`BLOCK_MODULES`. The one trap: the original block calls its norms ``norm1`` (self-attention,
no affine), ``norm3`` (cross-attention, affine) and ``norm2`` (FFN, no affine), while diffusers names
them in call order, so the original ``norm3`` becomes diffusers ``norm2``.

Loading is strict: a source key with no diffusers name, a diffusers parameter with no source tensor or
a shape mismatch raises :class:`CheckpointMismatchError` listing the keys; nothing is loaded partially.

Command line (writes ``config.json`` + ``*.safetensors`` with ``save_pretrained``)::

    python -m world_model.convert --from wan --src Wan2.1-T2V-1.3B --dst out/wan-t2v-1.3b
    python -m world_model.convert --from lvp --src data/ckpts/lvp_14B.ckpt \\
        --config Wan2.1-I2V-14B-480P/config.json --dst out/lvp-14b
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file

log = logging.getLogger(__name__)

# File names of the original Wan releases (and of diffusers, which uses the same ones).
WAN_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WAN_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
CONFIG_NAME = "config.json"
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
WAN22_EXPERT_DIRS = ("high_noise_model", "low_noise_model")

# ``_class_name`` of the two config flavours a config.json can hold.
WAN_ORIGINAL_CLASS = "WanModel"
DIFFUSERS_CLASS = "WanTransformer3DModel"
WAN_MODEL_TYPES = ("t2v", "i2v", "flf2v", "ti2v")
# diffusers splits image from text context as ``context[:, :len - 512]`` (hard-coded T5 length).
DIFFUSERS_TEXT_LEN = 512

# LVP: LightningModule attribute of the Wan DiT, and an EMA copy of it if one was kept.
LVP_MODEL_PREFIX = "model."
LVP_EMA_PREFIX = "ema_model."
TORCH_COMPILE_PREFIX = "_orig_mod."  # torch.compile(self.model) saves keys as model._orig_mod.*

MAX_KEYS_LISTED = 50

# ----------------------------------------------------------------------------------------------
# The key mapping. "Modules" keep their ``.weight``/``.bias`` suffix; "tensors" are whole parameters.
# ----------------------------------------------------------------------------------------------

#: Original module path -> diffusers module path, outside the transformer blocks.
TOP_LEVEL_MODULES: dict[str, str] = {
    "patch_embedding": "patch_embedding",  # Conv3d(in_dim, dim, patch, stride=patch)
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",  # [Linear, GELU(tanh), Linear]
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",  # [Linear, SiLU, Linear]
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",  # [SiLU, Linear(dim, 6 dim)]
    "head.head": "proj_out",  # head.norm has no affine: no tensors
    # I2V / FLF2V CLIP projection MLPProj.proj = [LayerNorm, Linear, GELU, Linear, LayerNorm]
    "img_emb.proj.0": "condition_embedder.image_embedder.norm1",
    "img_emb.proj.1": "condition_embedder.image_embedder.ff.net.0.proj",
    "img_emb.proj.3": "condition_embedder.image_embedder.ff.net.2",
    "img_emb.proj.4": "condition_embedder.image_embedder.norm2",
}
#: Original parameter -> diffusers parameter, outside the blocks.
TOP_LEVEL_TENSORS: dict[str, str] = {
    "head.modulation": "scale_shift_table",  # (1, 2, dim)
    "img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed",  # FLF2V only, (1, 514, 1280)
}
#: Inside ``blocks.N.``: original module path -> diffusers module path.
BLOCK_MODULES: dict[str, str] = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",  # RMSNorm over all heads ("rms_norm_across_heads")
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "cross_attn.k_img": "attn2.add_k_proj",  # Wan2.1 I2V / FLF2V image branch
    "cross_attn.v_img": "attn2.add_v_proj",
    "cross_attn.norm_k_img": "attn2.norm_added_k",
    "norm3": "norm2",  # cross-attention LayerNorm (affine); original norm1/norm2 carry no tensors
    "ffn.0": "ffn.net.0.proj",  # [Linear, GELU(tanh), Linear]
    "ffn.2": "ffn.net.2",
}
#: Inside ``blocks.N.``: original parameter -> diffusers parameter.
BLOCK_TENSORS: dict[str, str] = {"modulation": "scale_shift_table"}  # (1, 6, dim)

_BLOCK_KEY = re.compile(r"^(blocks\.\d+\.)(.+)$")
_LEAVES = ("weight", "bias")


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model; the message lists them."""


def _invert(table: Mapping[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


_TO_DIFFUSERS = (TOP_LEVEL_MODULES, TOP_LEVEL_TENSORS, BLOCK_MODULES, BLOCK_TENSORS)
_TO_ORIGINAL = tuple(_invert(t) for t in _TO_DIFFUSERS)


def _rename(key: str, tables: tuple[dict[str, str], ...]) -> str | None:
    top_modules, top_tensors, block_modules, block_tensors = tables
    match = _BLOCK_KEY.match(key)
    if match:
        prefix, rest, modules, tensors = match[1], match[2], block_modules, block_tensors
    else:
        prefix, rest, modules, tensors = "", key, top_modules, top_tensors
    if rest in tensors:
        return prefix + tensors[rest]
    module, _, leaf = rest.rpartition(".")
    if leaf in _LEAVES and module in modules:
        return f"{prefix}{modules[module]}.{leaf}"
    return None


def _original_name(diffusers_key: str) -> str | None:
    return _rename(diffusers_key, _TO_ORIGINAL)


def _list_keys(keys: list[str]) -> str:
    shown = "\n  ".join(keys[:MAX_KEYS_LISTED])
    more = f"\n  ... and {len(keys) - MAX_KEYS_LISTED} more" if len(keys) > MAX_KEYS_LISTED else ""
    return f"\n  {shown}{more}"


def _convert(state_dict: Mapping[str, torch.Tensor], tables, source: str, target: str) -> dict[str, torch.Tensor]:
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        new_key = _rename(key, tables)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise CheckpointMismatchError(
            f"{len(unknown)} key(s) of the {source} state dict have no {target} name:{_list_keys(sorted(unknown))}"
        )
    return converted


def wan_original_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original Wan ``WanModel`` state dict to ``WanTransformer3DModel`` keys (same tensors).

    Raises :class:`CheckpointMismatchError` listing every key that has no diffusers name.
    """
    return _convert(state_dict, _TO_DIFFUSERS, "original Wan", "diffusers")


def diffusers_to_wan_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`wan_original_to_diffusers` (used to write test checkpoints in the original layout)."""
    return _convert(state_dict, _TO_ORIGINAL, "diffusers", "original Wan")


# ----------------------------------------------------------------------------------------------
# LVP
# ----------------------------------------------------------------------------------------------


def lvp_to_wan_original(checkpoint: Mapping[str, Any], *, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Strip the LVP training wrapper: return the original Wan state dict of the planner's DiT.

    What the LVP release does (github.com/buoyancy99/large-video-planner and its forks, e.g.
    ``bcupps9/large-video-planner`` ``algorithms/wan/wan_t2v.py``, ``WanTextToVideo._load_tuned_state_dict``):
    the fine-tuned checkpoint (``data/ckpts/lvp_14B.ckpt``, from the Hugging Face repo
    ``KempnerInstituteAI/LVP``) is a PyTorch Lightning checkpoint; the DiT is the LightningModule's
    ``self.model``, an unmodified Wan2.1 ``WanModel`` (``model_type="i2v"``, CLIP ``img_emb``), so its
    tensors sit in ``checkpoint["state_dict"]`` under ``model.<original Wan key>``. Siblings in the same
    dict (``vae.*``, ``clip.*``, ``text_encoder.*``, ``vae_mean``, ``vae_inv_std``) and the trainer
    entries (``epoch``, ``optimizer_states``, ...) are not part of the DiT and are dropped, as LVP's own
    loader drops them. LVP builds the model from the base model's ``config.json``
    (Wan2.1-I2V-14B-480P): the ``.ckpt`` carries no model config.

    ``checkpoint`` is what ``torch.load`` returns for the ``.ckpt`` (a dict with ``"state_dict"``), or
    that inner state dict itself (for example re-saved as safetensors).

    Variants handled, each stated, none guessed from the tensors:

    * ``torch.compile``: LVP can compile ``self.model`` (``algorithm.model.compile``); the keys are then
      ``model._orig_mod.<key>`` and that inner prefix is stripped too.
    * EMA: the LVP training code keeps no EMA copy (none was found in the LightningModule, its base class
      or the experiment code), so the release checkpoint has raw weights only. If a checkpoint does hold an
      EMA copy of the DiT as ``self.ema_model`` (keys ``ema_model.<key>``), it is used when ``use_ema`` is
      true (the default) and the raw ``model.*`` tensors are dropped; ``use_ema=False`` takes ``model.*``.

    Not handled: sharded (FSDP "sharded" state-dict) checkpoint directories; consolidate them to one file
    first. LoRA-wrapped layers (``use_lora``) show up as unknown keys and are refused by the mapping.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"an LVP checkpoint is a dict, got {type(checkpoint).__name__}")
    state_dict = checkpoint["state_dict"] if "state_dict" in checkpoint else checkpoint
    if not isinstance(state_dict, Mapping):
        raise TypeError(f'checkpoint["state_dict"] must be a dict, got {type(state_dict).__name__}')

    has_ema = any(k.startswith(LVP_EMA_PREFIX) for k in state_dict)
    prefix = LVP_EMA_PREFIX if (use_ema and has_ema) else LVP_MODEL_PREFIX
    if has_ema:
        log.info("LVP checkpoint holds EMA weights (%s*): using %s*", LVP_EMA_PREFIX, prefix)

    selected = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not selected:
        tops = sorted({k.split(".", 1)[0] + "." for k in state_dict})
        raise CheckpointMismatchError(
            f"no tensor under '{prefix}' in the LVP checkpoint; its state dict has the prefixes {tops}"
        )
    if all(k.startswith(TORCH_COMPILE_PREFIX) for k in selected):
        selected = {k[len(TORCH_COMPILE_PREFIX):]: v for k, v in selected.items()}

    dropped = Counter(k.split(".", 1)[0] for k in state_dict if not k.startswith(prefix))
    if dropped:
        log.info("LVP checkpoint: kept %d tensors under '%s', dropped %s", len(selected), prefix, dict(dropped))
    return selected


def lvp_to_diffusers(checkpoint: Mapping[str, Any], *, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """LVP checkpoint -> ``WanTransformer3DModel`` state dict (:func:`lvp_to_wan_original`, then the Wan mapping).

    EMA weights are chosen when the checkpoint has them and ``use_ema`` is true; the LVP release has none.
    """
    return wan_original_to_diffusers(lvp_to_wan_original(checkpoint, use_ema=use_ema))


def diffusers_to_lvp(state_dict: Mapping[str, torch.Tensor], *, ema: bool = False) -> dict[str, Any]:
    """Inverse of :func:`lvp_to_diffusers` for tests: a Lightning-shaped ``{"state_dict": {"model.<key>": ...}}``.

    With ``ema=True`` the tensors go under ``ema_model.`` instead.
    """
    prefix = LVP_EMA_PREFIX if ema else LVP_MODEL_PREFIX
    original = diffusers_to_wan_original(state_dict)
    return {"state_dict": {prefix + k: v for k, v in original.items()}}


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


def diffusers_config_from_wan(
    original: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """``WanTransformer3DModel`` config from an original Wan ``config.json`` and the original state dict.

    The original config holds ``model_type, dim, ffn_dim, num_heads, num_layers, in_dim, out_dim,
    text_len, freq_dim, eps``; ``WanModel`` does not save ``patch_size, text_dim, qk_norm,
    cross_attn_norm`` (``ignore_for_config``), so those are read from the tensors, as is whether the
    model has the CLIP image branch (``img_emb``): Wan2.1 I2V/FLF2V do, Wan2.2 I2V (``model_type="i2v"``
    as well) does not. Every size the config states is checked against the tensors.
    """
    required = ("model_type", "dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "freq_dim", "eps")
    missing = [k for k in required if k not in original]
    if missing:
        raise ValueError(f"original Wan config lacks {missing} (has {sorted(original)})")
    model_type = original["model_type"]
    if model_type not in WAN_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported; supported: {WAN_MODEL_TYPES}")
    dim, num_heads, num_layers = int(original["dim"]), int(original["num_heads"]), int(original["num_layers"])
    if dim % num_heads:
        raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")

    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise CheckpointMismatchError(f"original Wan state dict has no '{key}'")
        return tuple(state_dict[key].shape)

    patch_shape = shape("patch_embedding.weight")  # (dim, in_dim, pt, ph, pw)
    patch_size = patch_shape[2:]
    has_image = "img_emb.proj.0.weight" in state_dict
    layers = {int(m[1]) for k in state_dict if (m := re.match(r"^blocks\.(\d+)\.", k))}
    checks = {
        "dim, in_dim vs patch_embedding.weight": ((dim, int(original["in_dim"])), patch_shape[:2]),
        "freq_dim vs time_embedding.0.weight": (int(original["freq_dim"]), shape("time_embedding.0.weight")[1]),
        "ffn_dim vs blocks.0.ffn.0.weight": (int(original["ffn_dim"]), shape("blocks.0.ffn.0.weight")[0]),
        "out_dim vs head.head.weight": (
            int(original["out_dim"]) * math.prod(patch_size), shape("head.head.weight")[0]),
        "num_layers vs blocks.N": (set(range(num_layers)), layers),
    }
    wrong = [f"{name}: config {a}, tensors {b}" for name, (a, b) in checks.items() if a != b]
    if wrong:
        raise CheckpointMismatchError("original config and state dict disagree:\n  " + "\n  ".join(wrong))
    if has_image and model_type in ("t2v", "ti2v"):
        raise ValueError(f"model_type {model_type!r} but the state dict has an image branch (img_emb.*)")
    if model_type == "flf2v" and "img_emb.emb_pos" not in state_dict:
        raise ValueError("model_type 'flf2v' but the state dict has no img_emb.emb_pos")
    text_len = int(original.get("text_len", DIFFUSERS_TEXT_LEN))
    if has_image and text_len != DIFFUSERS_TEXT_LEN:
        raise ValueError(f"text_len {text_len}: diffusers' image cross-attention assumes {DIFFUSERS_TEXT_LEN}")

    return {
        "patch_size": tuple(int(p) for p in patch_size),
        "num_attention_heads": num_heads,
        "attention_head_dim": dim // num_heads,
        "in_channels": int(original["in_dim"]),
        "out_channels": int(original["out_dim"]),
        "text_dim": shape("text_embedding.0.weight")[1],
        "freq_dim": int(original["freq_dim"]),
        "ffn_dim": int(original["ffn_dim"]),
        "num_layers": num_layers,
        "cross_attn_norm": "blocks.0.norm3.weight" in state_dict,
        "qk_norm": "rms_norm_across_heads" if "blocks.0.self_attn.norm_q.weight" in state_dict else None,
        "eps": float(original["eps"]),
        "image_dim": shape("img_emb.proj.0.weight")[0] if has_image else None,
        "added_kv_proj_dim": shape("blocks.0.cross_attn.k_img.weight")[1] if has_image else None,
        "pos_embed_seq_len": shape("img_emb.emb_pos")[1] if "img_emb.emb_pos" in state_dict else None,
    }


def _read_config(config: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path} (expected an original Wan or diffusers {CONFIG_NAME})")
    return json.loads(path.read_text())


def resolve_config(
    config: Mapping[str, Any] | str | Path, original_state_dict: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """The ``WanTransformer3DModel`` config for ``config``.

    ``config`` is a ``config.json`` path (or its folder) or a dict. ``"_class_name": "WanModel"`` marks an
    original Wan config, converted with :func:`diffusers_config_from_wan`; ``"WanTransformer3DModel"``
    or no ``_class_name`` (a dict such as ``model.config``) marks diffusers keyword arguments, used as is.
    """
    cfg = _read_config(config)
    class_name = cfg.get("_class_name")
    if class_name == WAN_ORIGINAL_CLASS:
        return diffusers_config_from_wan(cfg, original_state_dict)
    if class_name in (None, DIFFUSERS_CLASS):
        return {k: v for k, v in cfg.items() if not k.startswith("_")}
    raise ValueError(f"config _class_name {class_name!r}: expected {WAN_ORIGINAL_CLASS!r} or {DIFFUSERS_CLASS!r}")


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _as_flat_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointMismatchError(f"{path} is not a flat state dict of tensors (top level: {keys})")
    return dict(obj)


def _read_safetensors_shards(files: list[Path]) -> dict[str, torch.Tensor]:
    state_dict: dict[str, torch.Tensor] = {}
    for file in files:
        shard = load_file(file)
        duplicated = sorted(state_dict.keys() & shard.keys())
        if duplicated:
            raise CheckpointMismatchError(f"keys repeated across shards (again in {file}):{_list_keys(duplicated)}")
        state_dict.update(shard)
    return state_dict


def _read_wan_dir(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / WAN_INDEX_NAME
    single = folder / WAN_WEIGHTS_NAME
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"shards listed in {index} are missing: {absent}")
        state_dict = _read_safetensors_shards(files)
        if state_dict.keys() != weight_map.keys():
            raise CheckpointMismatchError(
                f"shards and {index.name} disagree; in the index only:"
                f"{_list_keys(sorted(weight_map.keys() - state_dict.keys()))}\nin the shards only:"
                f"{_list_keys(sorted(state_dict.keys() - weight_map.keys()))}"
            )
        return state_dict
    if single.is_file():
        return load_file(single)
    experts = [d for d in WAN22_EXPERT_DIRS if (folder / d).is_dir()]
    hint = f"; this looks like Wan2.2-A14B: pass one of {[str(folder / d) for d in experts]}" if experts else ""
    raise FileNotFoundError(
        f"no Wan weights in {folder}: expected {WAN_WEIGHTS_NAME} or {WAN_INDEX_NAME} with its shards{hint}"
    )


def read_wan_original(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an original Wan state dict: a release folder (single file or index + shards), a ``.safetensors``
    file, or a ``.pth``/``.pt`` file (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if path.is_dir():
        return _read_wan_dir(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Wan checkpoint not found: {path} (expected a folder with {WAN_WEIGHTS_NAME} or {WAN_INDEX_NAME}, "
            f"or a .safetensors / {' / '.join(TORCH_SUFFIXES)} file)"
        )
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix in TORCH_SUFFIXES:
        return _as_flat_state_dict(_torch_load(path), path)
    raise ValueError(
        f"unknown checkpoint file type {path.suffix!r}: {path} (expected .safetensors or {TORCH_SUFFIXES})"
    )


def read_lvp(path: str | Path) -> Mapping[str, Any]:
    """Read an LVP checkpoint file: the Lightning ``.ckpt`` (``torch.load(weights_only=True)``, as LVP does)
    or a ``.safetensors`` file holding its inner state dict."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder: an LVP checkpoint is one Lightning file such as lvp_14B.ckpt "
            "(sharded FSDP checkpoint folders must be consolidated to one file first)"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"LVP checkpoint not found: {path} (expected a Lightning .ckpt file such as lvp_14B.ckpt)"
        )
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix in TORCH_SUFFIXES:
        return _torch_load(path)
    raise ValueError(f"unknown checkpoint file type {path.suffix!r}: {path} (expected .ckpt or .safetensors)")


# ----------------------------------------------------------------------------------------------
# Building and loading the diffusers model
# ----------------------------------------------------------------------------------------------


def load_diffusers_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], *,
    source_name: Callable[[str], str | None] | None = None,
) -> WanTransformer3DModel:
    """Build ``WanTransformer3DModel(**config)`` and load ``state_dict`` strictly (tensors are assigned, not copied).

    ``source_name`` (diffusers key -> checkpoint key) lets the error name the checkpoint's own keys too.
    """
    # parameters on the meta device (no memory, no random init); buffers (the rotary tables, which no
    # checkpoint holds) stay real. Every parameter is then replaced by load_state_dict(assign=True).
    with init_empty_weights(include_buffers=False):
        model = WanTransformer3DModel.from_config(dict(config))
    expected = model.state_dict()

    def label(key: str) -> str:
        name = source_name(key) if source_name is not None else None
        return f"{key} (checkpoint: {name})" if name is not None and name != key else key

    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    shapes = sorted(
        f"{label(k)}: checkpoint {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected.keys() & state_dict.keys()
        if state_dict[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} model key(s) missing from the checkpoint:"
                        f"{_list_keys([label(k) for k in missing])}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint key(s) the model does not have:"
                        f"{_list_keys([label(k) for k in unexpected])}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es):{_list_keys(shapes)}")
    if problems:
        raise CheckpointMismatchError(
            "checkpoint does not match WanTransformer3DModel; nothing loaded.\n" + "\n".join(problems)
        )
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    return model.eval()


def _default_config_location(src: Path) -> Path:
    return src if src.is_dir() else src.parent


def load_wan_original(
    path_or_dir: str | Path, config: Mapping[str, Any] | str | Path | None = None
) -> WanTransformer3DModel:
    """Load an original Wan2.1/2.2 checkpoint as a ``WanTransformer3DModel``, strictly.

    ``config``: see :func:`resolve_config`; by default the original ``config.json`` next to the weights.
    """
    path = Path(path_or_dir)
    original = read_wan_original(path)
    cfg = resolve_config(config if config is not None else _default_config_location(path), original)
    return load_diffusers_state_dict(wan_original_to_diffusers(original), cfg, source_name=_original_name)


def load_lvp(
    path: str | Path, config: Mapping[str, Any] | str | Path, *, use_ema: bool = True
) -> WanTransformer3DModel:
    """Load an LVP checkpoint as a ``WanTransformer3DModel``, strictly.

    ``config`` is required: the ``.ckpt`` has none. LVP uses the base model's original ``config.json``
    (Wan2.1-I2V-14B-480P); a diffusers config works too (see :func:`resolve_config`).
    """
    original = lvp_to_wan_original(read_lvp(path), use_ema=use_ema)
    cfg = resolve_config(config, original)
    return load_diffusers_state_dict(wan_original_to_diffusers(original), cfg, source_name=_original_name)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _cast(model: WanTransformer3DModel, dtype: torch.dtype) -> None:
    """Cast to ``dtype`` except the modules diffusers keeps in float32 (``_keep_in_fp32_modules``: time
    embedder, modulation tables, norms), as ``from_pretrained(torch_dtype=...)`` would."""
    keep = set(model._keep_in_fp32_modules or ())
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.data = param.data.to(torch.float32 if keep & set(name.split(".")) else dtype)


def convert(
    source: str, src: str | Path, dst: str | Path, *, config: str | Path | None = None,
    dtype: str | None = None, max_shard_size: str = "10GB", use_ema: bool = True,
) -> Path:
    """Convert ``src`` (``source`` = ``"wan"`` or ``"lvp"``) and ``save_pretrained`` it to ``dst``."""
    if source == "wan":
        model = load_wan_original(src, config)
    elif source == "lvp":
        if config is None:
            raise ValueError(
                "--from lvp needs --config: the base model's config.json (Wan2.1-I2V-14B-480P/config.json)"
            )
        model = load_lvp(src, config, use_ema=use_ema)
    else:
        raise ValueError(f"unknown source layout {source!r}: expected 'wan' or 'lvp'")
    if dtype is not None:
        _cast(model, DTYPES[dtype])
    dst = Path(dst)
    model.save_pretrained(dst, safe_serialization=True, max_shard_size=max_shard_size)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("wrote %s (%.3g parameters, config %s)", dst, n_params, dst / CONFIG_NAME)
    return dst


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eva-convert-wm",
        description="Convert an original Wan2.1/2.2 or LVP checkpoint into a diffusers WanTransformer3DModel folder.",
    )
    parser.add_argument("--from", dest="source", required=True, choices=("wan", "lvp"), help="source key layout")
    parser.add_argument("--src", required=True, type=Path,
                        help=f"wan: release folder ({WAN_WEIGHTS_NAME} or {WAN_INDEX_NAME} + shards) or one "
                             ".safetensors/.pth file; lvp: the Lightning .ckpt file")
    parser.add_argument("--dst", required=True, type=Path, help="output folder (config.json + *.safetensors)")
    parser.add_argument("--config", type=Path, default=None,
                        help=f"config.json (original WanModel or diffusers) or its folder; wan: default {CONFIG_NAME} "
                             "next to the weights; lvp: required (the base Wan2.1-I2V-14B config.json)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="cast before saving (default: keep)")
    parser.add_argument("--max-shard-size", default="10GB", help="save_pretrained shard size")
    parser.add_argument("--no-ema", dest="use_ema", action="store_false",
                        help="lvp: take the raw model.* weights even if the checkpoint has an EMA copy")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert(args.source, args.src, args.dst, config=args.config, dtype=args.dtype,
                max_shard_size=args.max_shard_size, use_ema=args.use_ema)
    except (FileNotFoundError, IsADirectoryError, ValueError) as err:  # CheckpointMismatchError is a ValueError
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
