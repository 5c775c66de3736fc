import numpy as np
import pytest
import torch

from idm.decode import decode_video, to_control_rate
from tests.idm.test_model import tiny_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_model().eval()


def test_output_length_matches_video_and_edges_replicate(model):
    video = torch.randint(0, 256, (2, 7, 3, 32, 32), dtype=torch.uint8)
    out = decode_video(model, video)
    assert out.shape == (2, 7, 14)
    # edge rule: frame 0 sees (0, 0, 1); build that window by hand
    x = video.float() / 255
    window = torch.stack([x[:, 0], x[:, 0], x[:, 1]], dim=1)[:, None]
    with torch.no_grad():
        torch.testing.assert_close(out[:, 0], model.unnormalize_action(model(window)))


def test_decoding_is_invariant_to_batch_composition(model):
    a = torch.randint(0, 256, (1, 9, 3, 32, 32), dtype=torch.uint8)
    others = torch.randint(0, 256, (3, 9, 3, 32, 32), dtype=torch.uint8)
    alone = decode_video(model, a)
    batched = decode_video(model, torch.cat([others[:2], a, others[2:]]), max_windows=5)
    torch.testing.assert_close(batched[2:3], alone, atol=1e-5, rtol=1e-5)


def test_uint8_and_float_inputs_agree(model):
    v = torch.randint(0, 256, (1, 4, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(decode_video(model, v), decode_video(model, v.float() / 255))
    torch.testing.assert_close(decode_video(model, v.numpy()), decode_video(model, v))


def test_bad_inputs_are_refused(model):
    good = torch.rand(1, 4, 3, 32, 32)
    with pytest.raises(ValueError, match="resolution 48x48, the IDM expects 32x32"):
        decode_video(model, torch.rand(1, 4, 3, 48, 48))
    assert decode_video(model, torch.rand(1, 4, 3, 48, 48), resize=True).shape == (1, 4, 14)
    with pytest.raises(ValueError, match="channels last"):
        decode_video(model, good.permute(0, 1, 3, 4, 2))
    with pytest.raises(ValueError, match="0..255 floats"):
        decode_video(model, good * 255)
    with pytest.raises(TypeError, match="int32"):
        decode_video(model, (good * 255).int())
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        decode_video(model, good[0])
    bad = good.clone()
    bad[0, 2, 1, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="batch 0, frame 2"):
        decode_video(model, bad)
    with pytest.raises(ValueError, match="cameras"):
        decode_video(model, {"cam_left_wrist": good})


def test_to_control_rate_interpolates_linearly():
    a = np.stack([np.zeros(14), np.ones(14), 3 * np.ones(14)])
    out = to_control_rate(a, 10, 50)
    assert out.shape == (11, 14)
    np.testing.assert_allclose(out[[0, 5, 10]], a)
    np.testing.assert_allclose(out[1:5, 0], [0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(out[6:10, 3], [1.4, 1.8, 2.2, 2.6])
    t = torch.from_numpy(a)[None]
    assert to_control_rate(t, 10, 50).shape == (1, 11, 14)
    with pytest.raises(ValueError, match="integer multiple"):
        to_control_rate(a, 15, 50)


def test_cameras_of_mixed_dtypes_decode_as_floats():
    torch.manual_seed(0)
    m = tiny_model(cameras=("cam_high", "cam_left_wrist")).eval()
    high, wrist = (torch.randint(0, 256, (2, 5, 3, 32, 32), dtype=torch.uint8) for _ in range(2))
    as_uint8 = decode_video(m, {"cam_high": high, "cam_left_wrist": wrist}, max_windows=3)
    mixed = decode_video(m, {"cam_high": high, "cam_left_wrist": wrist.float() / 255})
    torch.testing.assert_close(mixed, as_uint8, atol=1e-5, rtol=1e-5)
