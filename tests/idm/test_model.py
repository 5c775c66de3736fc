import json

import pytest
import torch

from configs.embodiment import load_embodiment
from idm.model import InverseDynamicsModel, SpatialSoftmax

JOINTS = tuple(load_embodiment("aloha_viperx").joint_names)


def tiny_model(**kw) -> InverseDynamicsModel:
    args = dict(image_size=(32, 32), channels=(8, 16), num_keypoints=4, mlp_hidden=16, context_k=1,
                joint_names=JOINTS)
    args.update(kw)
    return InverseDynamicsModel(**args)


@pytest.mark.parametrize("row,col", [(0, 0), (3, 7), (9, 2), (9, 9)])
def test_spatial_softmax_finds_a_peak(row, col):
    h, w = 10, 10
    ss = SpatialSoftmax()
    feats = torch.full((1, 2, h, w), -50.0)
    feats[0, 0, row, col] = 50.0  # sharp peak in channel 0
    feats[0, 1] = 0.0  # flat channel 1: expectation at the centre
    out = ss(feats).reshape(2, 2)
    assert out[0, 0].item() == pytest.approx(-1 + 2 * col / (w - 1), abs=1e-4)  # x follows the column
    assert out[0, 1].item() == pytest.approx(-1 + 2 * row / (h - 1), abs=1e-4)  # y follows the row
    assert out[1].abs().max().item() < 1e-5


def test_forward_shape_and_normalisation_buffers():
    m = tiny_model()
    x = torch.rand(5, 1, 3, 3, 32, 32)
    assert m(x).shape == (5, 14)
    m.set_normalization(torch.arange(14.0), torch.full((14,), 1e-9), [0.4, 0.5, 0.6], [0.2, 0.2, 0.2])
    assert torch.all(m.action_std >= 1e-3)  # floored
    a = torch.randn(3, 14)
    torch.testing.assert_close(m.unnormalize_action(m.normalize_action(a)), a)


def test_image_normalisation_folded_into_the_stem_equals_normalising_the_frames():
    """The backbone folds (frames - mean) / std into its stem; the same weights applied to explicitly
    normalised frames must give the same keypoint maps, for each colour channel's own statistics."""
    torch.manual_seed(0)
    backbone = tiny_model(context_k=1).backbones[0]
    mean, std = torch.tensor([0.3, 0.5, 0.7]), torch.tensor([0.1, 0.2, 0.4])
    frames = torch.rand(4, 3 * 3, 32, 32)  # 2k+1 = 3 frames stacked on channels, colours fastest
    normalised = (frames - mean.repeat(3).view(1, -1, 1, 1)) / std.repeat(3).view(1, -1, 1, 1)
    reference = torch.nn.functional.silu(backbone.stem_norm(backbone.stem(normalised)))
    for block in backbone.blocks:
        reference = block(reference)
    reference = backbone.to_keypoints(reference)
    torch.testing.assert_close(backbone(frames, mean, std), reference, rtol=1e-5, atol=1e-5)


def test_uint8_frames_equal_the_same_frames_as_floats_in_fp32_and_under_bf16_autocast():
    """The model takes uint8 frames as they are (the 1/255 folded into the stem with the normalisation)."""
    torch.manual_seed(0)
    model = tiny_model(context_k=1).eval()
    frames = torch.randint(0, 256, (4, 1, 3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(frames), model(frames.float() / 255), rtol=1e-4, atol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            as_uint8, as_float = model(frames), model(frames.float() / 255)
    # bf16 rounds the stem's inputs differently on the two paths (uint8 -> bf16 is exact, x / 255 is not)
    assert (as_uint8 - as_float).abs().max() < 0.05 * as_float.abs().max()


def test_a_coarser_patch_per_camera_gives_coarser_keypoint_maps():
    m = tiny_model(cameras=("cam_high", "cam_left_wrist"), patch_sizes=(4, 8))
    assert [b.stem.stride for b in m.backbones] == [(4, 4), (8, 8)]
    frames = torch.rand(2, 2, 3, 3, 32, 32)
    maps = [b(frames[:, i].flatten(1, 2), m.image_mean, m.image_std) for i, b in enumerate(m.backbones)]
    assert [tuple(f.shape[2:]) for f in maps] == [(8, 8), (4, 4)]
    assert m(frames).shape == (2, 14)
    with pytest.raises(ValueError, match="one per camera"):
        tiny_model(cameras=("cam_high", "cam_left_wrist"), patch_sizes=(4,))
    with pytest.raises(ValueError, match="patch size 12 of camera 'cam_high'"):
        tiny_model(patch_sizes=(12,))


def test_save_load_round_trip_identical(tmp_path):
    torch.manual_seed(0)
    m = tiny_model(cameras=("cam_high", "cam_left_wrist")).eval()
    m.set_normalization(torch.randn(14), torch.rand(14) + 0.5, [0.3, 0.4, 0.5], [0.1, 0.2, 0.3])
    m.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors"}
    loaded = InverseDynamicsModel.from_pretrained(tmp_path / "ckpt", embodiment=load_embodiment("aloha_viperx"))
    x = torch.rand(4, 2, 3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), loaded(x))
    torch.testing.assert_close(loaded.action_mean, m.action_mean)  # statistics travel in the checkpoint


def test_checkpoint_of_another_embodiment_is_refused(tmp_path):
    tiny_model().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="aloha_viperx.*agilex_piper"):
        InverseDynamicsModel.from_pretrained(tmp_path / "ckpt", embodiment=load_embodiment("agilex_piper"))


def test_missing_files_and_mismatched_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        InverseDynamicsModel.from_pretrained(tmp_path)
    tiny_model().save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["num_keypoints"] = 6  # weights no longer fit
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises((KeyError, RuntimeError), match="to_keypoints|size mismatch"):
        InverseDynamicsModel.from_pretrained(tmp_path / "ckpt")
