import numpy as np
import pytest
import torch

from tests.training.reference_impls import SSDPT_COCO, SSDPT_VOC, ssdpt_priors, tv_default_boxes
from training.errors import ConfigError
from training.priors import DefaultBoxGenerator, paper_scales, preset


@pytest.mark.parametrize("name", ["paper", "voc", "coco", "torchvision"])
def test_ssd300_has_8732_boxes(name):
    gen = preset(name)
    assert gen.num_boxes_per_location == [4, 6, 6, 6, 4, 4]
    assert gen.num_boxes == 8732
    assert gen.generate().shape == (8732, 4)


def test_paper_formula_reproduces_tabled_scales():
    scales = paper_scales(0.2, 0.9, 6)
    assert scales[:6] == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9], abs=1e-12)
    gen = preset("paper")
    # Pixel sizes at 300: 60, 102, 144, 186, 228, 270.
    assert [round(s * 300, 6) for s in gen.min_sizes] == [60, 102, 144, 186, 228, 270]
    boxes = gen.generate()
    first_map = boxes[: 38 * 38 * 4].reshape(38, 38, 4, 4)
    cell = first_map[0, 0]
    s1, s2 = 0.2, 0.34
    expected_wh = [
        (s1, s1),
        (np.sqrt(s1 * s2),) * 2,
        (s1 * np.sqrt(2), s1 / np.sqrt(2)),
        (s1 / np.sqrt(2), s1 * np.sqrt(2)),
    ]
    np.testing.assert_allclose(cell[:, 2:], expected_wh, rtol=1e-6)
    # The paper places centres at ((i + 0.5) / |f_k|, (j + 0.5) / |f_k|).
    np.testing.assert_allclose(cell[:, :2], 0.5 / 38, rtol=1e-6)
    np.testing.assert_allclose(first_map[37, 0, 0, :2], [0.5 / 38, 37.5 / 38], rtol=1e-6)
    # Maps with ratios {2, 3}: 1, 1', 2, 1/2, 3, 1/3.
    m2 = boxes[38 * 38 * 4 : 38 * 38 * 4 + 6]
    s, s_next = 0.34, 0.48
    np.testing.assert_allclose(
        m2[:, 2:],
        [
            (s, s),
            (np.sqrt(s * s_next),) * 2,
            (s * np.sqrt(2), s / np.sqrt(2)),
            (s / np.sqrt(2), s * np.sqrt(2)),
            (s * np.sqrt(3), s / np.sqrt(3)),
            (s / np.sqrt(3), s * np.sqrt(3)),
        ],
        rtol=1e-6,
    )


@pytest.mark.parametrize(("name", "cfg"), [("voc", SSDPT_VOC), ("coco", SSDPT_COCO)])
def test_presets_match_ssd_pytorch_exactly(name, cfg):
    ours = torch.from_numpy(preset(name).generate())
    ref = ssdpt_priors(cfg)
    assert torch.equal(ours, ref)


def test_voc_layout_first_and_last_boxes_of_each_map():
    boxes = preset("voc").generate()
    start = 0
    steps = [8, 16, 32, 64, 100, 300]
    mins = [30, 60, 111, 162, 213, 264]
    maxs = [60, 111, 162, 213, 264, 315]
    for k, (f, a) in enumerate(zip([38, 19, 10, 5, 3, 1], [4, 6, 6, 6, 4, 4])):
        block = boxes[start : start + f * f * a]
        c0 = 0.5 * steps[k] / 300
        c_last = (f - 0.5) * steps[k] / 300
        s = mins[k] / 300
        np.testing.assert_allclose(block[0], [c0, c0, s, s], rtol=1e-6)
        last_w, last_h = (
            (s / np.sqrt(3), s * np.sqrt(3)) if a == 6 else (s / np.sqrt(2), s * np.sqrt(2))
        )
        expect_last = np.clip([c_last, c_last, last_w, last_h], 0, 1)
        np.testing.assert_allclose(block[-1], expect_last, rtol=1e-6)
        np.testing.assert_allclose(block[1, 2:], np.sqrt(s * maxs[k] / 300), rtol=1e-6)
        # Row-major cells: the second cell moves in x, cell f moves in y.
        if f > 1:
            np.testing.assert_allclose(block[a, :2], [c0 + steps[k] / 300, c0], rtol=1e-6)
            np.testing.assert_allclose(block[f * a, :2], [c0, c0 + steps[k] / 300], rtol=1e-6)
        start += f * f * a
    assert start == 8732


def test_torchvision_preset_matches_torchvision_ssd300_vgg16():
    ref = tv_default_boxes(
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
        scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
        steps=[8, 16, 32, 64, 100, 300],
    )
    ours = torch.from_numpy(preset("torchvision").generate())
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-7)
    # Same sizes as ssd.pytorch's COCO boxes; only the clipping of centres differs.
    coco = torch.from_numpy(preset("coco").generate())
    torch.testing.assert_close(coco[:, 2:], ref[:, 2:], rtol=0, atol=1e-7)
    # The 10x10 map's last column (cx) and last row (cy), 6 boxes per cell.
    assert int((ours[:, :2] > 1).sum()) == 10 * 6 + 10 * 6


def test_clip_option():
    unclipped = preset("voc", clip="none").generate()
    assert unclipped[:, 2:].max() > 1.0  # the 1x1 map's s' and ratio-2 boxes
    clipped = preset("voc").generate()
    assert clipped.max() <= 1.0
    assert clipped.min() >= 0.0


def test_round_trip_through_dict():
    gen = preset("coco")
    again = DefaultBoxGenerator.from_dict(gen.to_dict())
    assert again == gen
    np.testing.assert_array_equal(again.generate(), gen.generate())


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="unknown prior preset 'vocc'"):
        preset("vocc")
    with pytest.raises(ConfigError, match="6 feature maps"):
        DefaultBoxGenerator(min_sizes=(0.1,) * 5, max_sizes=(0.2,) * 6)
    with pytest.raises(ConfigError, match="clip must be one of"):
        preset("voc", clip="yes")
    with pytest.raises(ConfigError, match="invalid default box"):
        DefaultBoxGenerator.from_dict({"min_sizes": [0.1]})
