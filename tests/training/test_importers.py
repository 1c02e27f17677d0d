"""The converted models must compute what the original architectures compute."""

import pickle

import cv2
import numpy as np
import pytest
import torch

from tests.training.reference_impls import TVSSD300VGG16, TVVGG16, SSDPyTorch
from training.errors import ConfigError, WeightsError
from training.importers import (
    coco91_class_names,
    detect_kind,
    import_checkpoint,
    import_torchvision_vgg16,
    mobilenet_v2_imagenet_path,
    read_checkpoint,
)
from training.model import count_parameters
from training.weights import load_detector, save_detector


def xavier(module):
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.uniform_(m.bias, -0.1, 0.1)
    return module


def assert_same(ours, ref):
    scale = ref.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * scale)


def test_ssd_pytorch_checkpoint_computes_the_same(tmp_path):
    ref = xavier(SSDPyTorch(21)).eval()
    path = tmp_path / "ssd300_mAP_77.43_v2.pth"
    # saved from nn.DataParallel, as many ssd.pytorch checkpoints are
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, path)
    assert detect_kind(read_checkpoint(path)) == "ssd-pytorch"
    model = import_checkpoint(path).eval()
    assert model.spec.class_names[0] == "aeroplane"
    assert model.spec.priors.preset == "voc"

    bgr = torch.rand(1, 300, 300, 3) * 255  # what ssd.pytorch feeds: BGR - (104, 117, 123), to RGB
    ref_in = (bgr - torch.tensor([104.0, 117.0, 123.0]))[..., [2, 1, 0]].permute(0, 3, 1, 2)
    our_in = bgr[..., [2, 1, 0]].permute(0, 3, 1, 2)
    with torch.no_grad():
        loc_r, conf_r = ref(ref_in)
        loc, conf = model(our_in)
    assert_same(loc, loc_r)
    assert_same(conf, conf_r)

    out = tmp_path / "converted.safetensors"
    save_detector(model, out)
    with torch.no_grad():
        assert torch.equal(load_detector(out)(our_in)[1], conf)


def test_torchvision_ssd300_vgg16_computes_the_same(tmp_path):
    ref = xavier(TVSSD300VGG16(91)).eval()
    path = tmp_path / "ssd300_vgg16_coco-b556d3b4.pth"
    torch.save(ref.state_dict(), path)
    model = import_checkpoint(path).eval()
    # torchvision's published parameter count for SSD300_VGG16_Weights.COCO_V1
    assert count_parameters(model) == 35_641_826
    assert model.spec.num_classes == 91
    assert model.spec.class_names[0] == "person"
    assert model.spec.class_names[11] == "N/A"
    assert model.spec.priors.preset == "torchvision"

    rgb01 = torch.rand(1, 3, 300, 300)
    with torch.no_grad():
        out = ref(ref.normalize(rgb01[0])[None])
        loc, conf = model(rgb01 * 255)
    assert_same(loc, out["bbox_regression"])
    assert_same(conf, out["cls_logits"])


def test_coco91_names_follow_category_ids():
    names = coco91_class_names()
    assert len(names) == 90
    assert names.count("N/A") == 10
    assert names[0] == "person"
    assert names[89] == "toothbrush"
    assert names[11] == "N/A"


def test_torchvision_vgg16_imagenet_conversion():
    ref = TVVGG16().eval()
    sd = ref.state_dict()
    ref.features[16].ceil_mode = True  # pool3, as SSD sets it (75 -> 38 instead of 37)
    model = import_torchvision_vgg16(sd, classes="voc").eval()
    x = torch.rand(1, 3, 300, 300) * 255
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    with torch.no_grad():
        ref_feats = ref.features[:23](((x - mean) / std).clone())  # conv1_1 .. relu4_3
        ours = model.backbone.stage1(model.normalize(x))
        assert_same(ours, ref_feats)
        # pool4 .. relu5_3: the same torchvision layers (ceil_mode only matters at 75x75)
        ref5 = ref.features[23:30](ref_feats.clone())
        ours5 = model.backbone.stage2[:7](ours)
        assert_same(ours5, ref5)
    fc6 = sd["classifier.0.weight"].view(4096, 512, 7, 7)
    conv6 = model.backbone.stage2.conv6
    assert torch.equal(conv6.weight, fc6[::4, :, ::3, ::3])
    assert torch.equal(conv6.bias, sd["classifier.0.bias"][::4])
    assert torch.equal(
        model.backbone.stage2.conv7.weight[:, :, 0, 0], sd["classifier.3.weight"][::4, ::4]
    )
    assert model.spec.mean == (123.675, 116.28, 103.53)


IMAGENET_DOGS = range(151, 269)  # ImageNet-1k class ids 151..268 are dog breeds


def test_mobilenet_v2_imagenet_weights_are_loaded_faithfully(shared_data):
    """Real weights, real photo: the converted backbone plus torchvision's own classifier
    must still recognize a dog, which only works if every layer and name is right."""
    path = mobilenet_v2_imagenet_path()
    sd = read_checkpoint(path)
    assert detect_kind(sd) == "torchvision-mobilenet-v2"
    model = import_checkpoint(path, classes="voc").eval()
    for k, v in sd.items():
        if k.startswith("features."):
            assert torch.equal(model.state_dict()[f"backbone.{k}"], v)

    img = cv2.imread(str(shared_data / "images" / "darknet" / "dog.jpg"))
    rgb = cv2.cvtColor(cv2.resize(img, (224, 224)), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        feats = model.backbone.features(model.normalize(x))
        logits = torch.nn.functional.linear(
            feats.mean(dim=(2, 3)), sd["classifier.1.weight"], sd["classifier.1.bias"]
        )
    top1 = int(logits.argmax())
    assert top1 in IMAGENET_DOGS, top1


class NotATensor:
    pass


def test_unsafe_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"features.0.weight": NotATensor()}, f, protocol=2)
    with pytest.raises(WeightsError, match="cannot be loaded safely"):
        read_checkpoint(path)


def test_unknown_and_broken_checkpoints(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsError, match="unrecognized checkpoint"):
        import_checkpoint(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be loaded safely"):
        read_checkpoint(garbage)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(empty)
    with pytest.raises(WeightsError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_class_names_must_fit_the_checkpoint(tmp_path):
    ref = SSDPyTorch(4)
    path = tmp_path / "custom.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(ConfigError, match="3 classes; give their names"):
        import_checkpoint(path)
    with pytest.raises(ConfigError, match="has 3 classes but 2 names"):
        import_checkpoint(path, classes="a,b")
    model = import_checkpoint(path, classes="a,b,c", priors="coco")
    assert model.spec.class_names == ("a", "b", "c")
    assert model.spec.priors.preset == "coco"
    sd = ref.state_dict()
    del sd["extras.3.bias"]
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="missing tensor extras.3.bias"):
        import_checkpoint(path, classes="a,b,c")
    sd = ref.state_dict()
    sd["fc8.weight"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="unexpected tensor fc8.weight .*ssd.pytorch SSD300"):
        import_checkpoint(path, classes="a,b,c")


def test_safetensors_and_malformed_heads_are_clear_errors(tmp_path):
    from safetensors.torch import save_file

    st = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(st))
    with pytest.raises(WeightsError, match="unrecognized checkpoint"):
        import_checkpoint(st)  # torch.load reads safetensors files too
    st.write_bytes(st.read_bytes()[:20])
    with pytest.raises(WeightsError, match="model.safetensors: not a readable"):
        read_checkpoint(st)
    sd = SSDPyTorch(21).state_dict()
    sd["conf.0.weight"] = torch.zeros(())
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"conf.0.weight has shape \(\), not an SSD300 head"):
        import_checkpoint(path)
