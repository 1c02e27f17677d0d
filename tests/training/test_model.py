import pytest
import torch

from training.errors import ConfigError
from training.model import SSD, count_parameters
from training.spec import make_spec


@pytest.fixture(scope="module")
def vgg16_voc():
    return SSD(make_spec("vgg16", "voc", "voc")).eval()


def test_vgg16_ssd300_matches_the_paper(vgg16_voc):
    m = vgg16_voc
    b = m.backbone
    conv6, conv7 = b.stage2.conv6, b.stage2.conv7
    assert (conv6.out_channels, conv6.kernel_size, conv6.dilation) == (1024, (3, 3), (6, 6))
    assert (conv7.out_channels, conv7.kernel_size) == (1024, (1, 1))
    assert (b.stage2.pool5.kernel_size, b.stage2.pool5.stride) == (3, 1)
    assert torch.all(b.l2norm.weight == 20)
    assert [c.out_channels // 4 for c in m.head.loc] == [4, 6, 6, 6, 4, 4]
    assert [c.out_channels // 21 for c in m.head.conf] == [4, 6, 6, 6, 4, 4]
    # The Caffe/ssd.pytorch SSD300 for VOC: 26,285,486 parameters.
    assert count_parameters(m) == 26_285_486
    with torch.no_grad():
        feats = b(torch.zeros(1, 3, 300, 300))
        loc, conf = m(torch.zeros(1, 3, 300, 300))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (512, 38, 38),
        (1024, 19, 19),
        (512, 10, 10),
        (256, 5, 5),
        (256, 3, 3),
        (256, 1, 1),
    ]
    assert loc.shape == (1, 8732, 4)
    assert conf.shape == (1, 8732, 21)


@pytest.mark.parametrize("backbone", ["vgg16_bn", "mobilenet_v2"])
def test_output_shapes_of_the_other_backbones(backbone):
    m = SSD(make_spec(backbone, ["a", "b", "c"], "voc")).eval()
    with torch.no_grad():
        loc, conf = m(torch.rand(2, 3, 300, 300) * 255)
        feats = m.backbone(torch.zeros(1, 3, 300, 300))
    assert [f.shape[-1] for f in feats] == [38, 19, 10, 5, 3, 1]
    assert loc.shape == (2, 8732, 4)
    assert conf.shape == (2, 8732, 4)
    if backbone == "vgg16_bn":
        assert any(isinstance(x, torch.nn.BatchNorm2d) for x in m.backbone.stage1)


def test_detect_returns_normalized_boxes():
    m = SSD(make_spec("mobilenet_v2", "voc", "voc")).eval()
    dets = m.detect(torch.rand(1, 3, 300, 300) * 255)
    assert len(dets) == 1
    d = dets[0]
    assert d.boxes.shape[1] == 4
    assert (d.boxes >= 0).all()
    assert (d.boxes <= 1).all()
    assert ((d.labels >= 1) & (d.labels <= 20)).all()


def test_l2norm_runs_in_fp32_for_half_inputs():
    from training.backbones import L2Norm

    x = torch.full((1, 512, 2, 2), 300.0).half()  # sum of squares overflows FP16
    out = L2Norm(512)(x)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    torch.testing.assert_close(
        out.float(), torch.full_like(out.float(), 20 / 512**0.5), rtol=1e-3, atol=0
    )


def test_wrong_input_shape_is_a_clear_error():
    m = SSD(make_spec("mobilenet_v2", "voc", "voc"))
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 3, 300, 300\]"):
        m(torch.zeros(1, 3, 224, 224))


def test_bad_specs_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone 'resnet'"):
        make_spec("resnet")
    with pytest.raises(ConfigError, match="unknown prior preset"):
        make_spec("vgg16", "voc", "yolo")
    with pytest.raises(ConfigError, match="class list file not found"):
        make_spec("vgg16", "missing/classes.txt")
    with pytest.raises(ConfigError, match="duplicate class names: cat"):
        make_spec("vgg16", "cat,dog,cat")
    with pytest.raises(ConfigError, match="index 0 is reserved"):
        make_spec("vgg16", "background,dog")
    f = tmp_path / "names.txt"
    f.write_text("cat\n\ndog\n")
    assert make_spec("vgg16", str(f)).class_names == ("cat", "dog")


def test_specs_from_files_are_validated():
    import json

    from training.backbones import BACKBONES
    from training.spec import BACKBONE_NAMES, ModelSpec

    assert set(BACKBONE_NAMES) == set(BACKBONES)
    good = json.loads(make_spec("mobilenet_v2", "voc", "voc").to_json())
    cases = [
        (("priors", "feature_maps"), [39, 19, 10, 5, 3, 1], "SSD300 has feature maps"),
        (("priors", "steps"), [0, 16, 32, 64, 100, 300], "steps must be positive"),
        (("variances",), [0.1, 0.1, 0.2], "variances must be four positive"),
        (("variances",), [0.1, 0.0, 0.2, 0.2], "variances must be four positive"),
        (("class_names",), [1, 2], "class names must be non-empty strings"),
        (("input_size",), 512, "only 300x300"),
    ]
    for keys, value, message in cases:
        d = json.loads(json.dumps(good))
        target = d
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        with pytest.raises(ConfigError, match=message):
            ModelSpec.from_json(json.dumps(d))
    with pytest.raises(ConfigError, match="invalid model description"):
        ModelSpec.from_json("{not json")


def test_a_mistyped_class_list_is_not_taken_for_a_class_name():
    with pytest.raises(ConfigError, match="unknown class list 'vocc'.*one class: 'vocc,'"):
        make_spec("vgg16", "vocc")
    assert make_spec("vgg16", "raccoon,").class_names == ("raccoon",)


@pytest.mark.parametrize(
    ("backbone", "trainable"), [("vgg16", ("l2norm", "extras")), ("mobilenet_v2", ("extras",))]
)
def test_a_frozen_backbone_keeps_its_imagenet_part_fixed_in_train_mode(backbone, trainable):
    from training.backbones import build_backbone

    net = build_backbone(backbone)
    frozen = net.freeze_pretrained()
    net.train()
    fixed = [getattr(net, part) for part in net.pretrained_parts]
    assert frozen == sum(p.numel() for part in fixed for p in part.parameters()) > 0
    for part in fixed:
        assert all(not p.requires_grad for p in part.parameters())
        assert not any(m.training for m in part.modules())  # batch-norm statistics stay
    for name in trainable:
        assert all(p.requires_grad for p in getattr(net, name).parameters())
        assert all(m.training for m in getattr(net, name).modules())
    net.eval()
    net.train()
    assert not any(m.training for part in fixed for m in part.modules())
