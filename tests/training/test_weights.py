import json

import pytest
import torch
from safetensors.torch import save_file

from training.errors import WeightsError
from training.model import SSD
from training.spec import make_spec
from training.weights import load_detector, read_spec, save_detector


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(1)
    model = SSD(make_spec("mobilenet_v2", "voc", "coco")).eval()
    # Non-trivial BN statistics, so the test also covers buffers.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_detector(model, path)
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    again = load_detector(path)
    assert again.spec == model.spec
    x = torch.rand(2, 3, 300, 300) * 255
    with torch.no_grad():
        a, b = model(x), again(x)
    assert torch.equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert torch.equal(again.priors, model.priors)


def test_the_file_describes_itself(saved):
    _, path = saved
    spec = read_spec(path)
    assert spec.backbone == "mobilenet_v2"
    assert spec.class_names[14] == "person"
    assert spec.num_classes == 21
    assert spec.priors.preset == "coco"
    assert spec.priors.num_boxes == 8732
    assert spec.mean == pytest.approx((123.675, 116.28, 103.53))


def test_wrong_class_count_is_refused(saved):
    _, path = saved
    with pytest.raises(WeightsError, match="has 21 classes .* expected 81"):
        load_detector(path, num_classes=81)


def test_corrupt_truncated_foreign_and_missing_files(saved, tmp_path):
    _, path = saved
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_detector(garbage)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(WeightsError, match="truncated.safetensors"):
        load_detector(truncated)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(WeightsError, match="not an SSD300 weights file"):
        load_detector(foreign)

    with pytest.raises(WeightsError, match="weights file not found"):
        load_detector(tmp_path / "nope.safetensors")


def test_mismatched_tensors_are_named(saved, tmp_path):
    model, _ = saved
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["head.conf.0.bias"] = torch.zeros(7)
    del state["head.loc.5.weight"]
    meta = {"format": "ssd300-detector", "format_version": "1", "spec": model.spec.to_json()}
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=meta)
    with pytest.raises(WeightsError, match=r"missing \(e.g. head.loc.5.weight\).*head.conf.0.bias"):
        load_detector(bad)

    spec = json.loads(model.spec.to_json())
    spec["backbone"] = "resnet50"
    save_file(state, str(bad), metadata={**meta, "spec": json.dumps(spec)})
    with pytest.raises(WeightsError, match="unknown backbone 'resnet50'"):
        load_detector(bad)

    save_file(state, str(bad), metadata={**meta, "format_version": "9"})
    with pytest.raises(WeightsError, match="version '9' is not supported"):
        load_detector(bad)


def test_save_is_atomic(saved, tmp_path, monkeypatch):
    model, _ = saved
    out = tmp_path / "m.safetensors"
    save_detector(model, out)
    before = out.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("training.weights.save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_detector(model, out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
