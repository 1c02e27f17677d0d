import json
from pathlib import Path

import pytest
import torch

from training.errors import ConfigError
from training.imagenet_prior import (
    IMAGENET_GROUPS,
    NUM_IMAGENET_CLASSES,
    PRIOR_MAP,
    ImageNetClassPrior,
    box_pooling,
    class_groups,
    grouped_channels,
    hold_grouped_weights,
)
from training.model import SSD
from training.spec import ModelSpec, make_spec

VOC = (Path(__file__).resolve().parents[2] / "assets/classes/voc.txt").read_text().split()
DOG = 200  # an ImageNet dog breed (Chihuahua is 151, the last breed 268)


def test_the_groups_cover_the_voc_classes_but_person_and_diningtable_without_overlap():
    assert set(IMAGENET_GROUPS) == set(VOC) - {"person", "diningtable"}
    seen = [i for g in IMAGENET_GROUPS.values() for i in g]
    assert len(seen) == len(set(seen)), "an ImageNet class in two groups"
    assert all(0 <= i < NUM_IMAGENET_CLASSES for i in seen)
    assert len(IMAGENET_GROUPS["dog"]) == 118


def test_class_groups_follow_the_model_classes_and_their_coco_names():
    groups = class_groups(["person", "dog", "tv", "raccoon"])
    assert list(groups) == [0, 2, 3]  # background, dog, tv (= tvmonitor); no person, raccoon
    assert groups[2] == IMAGENET_GROUPS["dog"]
    assert groups[3] == IMAGENET_GROUPS["tvmonitor"]
    assert set(groups[0]) == set(range(NUM_IMAGENET_CLASSES)) - set(groups[2]) - set(groups[3])


def one_hot_classifier(prior: ImageNetClassPrior, channels: int = 8) -> None:
    """ImageNet class DOG reads channel 0, every other class nothing: a feature map whose
    channel 0 is large is a dog, a zero one is uniform over the 1000 classes."""
    weight = torch.zeros(NUM_IMAGENET_CLASSES, channels)
    weight[DOG, 0] = 1.0
    prior.load_imagenet(
        {"classifier.1.weight": weight, "classifier.1.bias": torch.zeros(NUM_IMAGENET_CLASSES)}
    )


def cell_boxes(size: int, per_cell: int) -> torch.Tensor:
    """[size * size * per_cell, 4] boxes that are exactly their cell, per_cell of each."""
    c = (torch.arange(size) + 0.5) / size
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    one = torch.stack([cx.flatten(), cy.flatten(), *[torch.full((size * size,), 1 / size)] * 2], 1)
    return one.repeat_interleave(per_cell, 0)


def test_the_prior_is_imagenets_softmax_summed_per_group_for_every_box():
    pool = box_pooling(cell_boxes(3, 4), size=3, cell=1 / 3)
    prior = ImageNetClassPrior(["person", "dog", "cat"], pool, in_channels=8)
    one_hot_classifier(prior)
    f = torch.zeros(1, 8, 3, 3)
    f[0, 0, 1, 2] = 30.0  # one dog cell: row 1, column 2
    out = prior(f)
    assert out.shape == (1, 3 * 3 * 4, 4)  # cells row-major, 4 boxes per cell, 3 + 1 classes
    p = out.exp()
    dog_cell = (1 * 3 + 2) * 4
    assert torch.allclose(p[0, dog_cell : dog_cell + 4, 2], torch.ones(4), atol=1e-4)
    assert torch.allclose(p[0, dog_cell : dog_cell + 4, 0], torch.zeros(4), atol=1e-4)
    assert torch.allclose(p[0, :, 1], torch.ones(36))  # person is never vetoed
    plain = p[0, 0]  # a uniform cell: each class gets its share of the 1000
    n_dog, n_cat = len(IMAGENET_GROUPS["dog"]), len(IMAGENET_GROUPS["cat"])
    rest = (NUM_IMAGENET_CLASSES - n_dog - n_cat) / NUM_IMAGENET_CLASSES
    expected = torch.tensor([rest, 1.0, n_dog / 1000, n_cat / 1000])  # person: no evidence
    assert torch.allclose(plain, expected, atol=1e-5)
    assert out.min() >= torch.log(torch.tensor(prior.eps)) - 1e-4  # the veto is bounded
    with pytest.raises(ValueError, match="the prior pools 9 cells, the map has 4"):
        prior(torch.zeros(1, 8, 2, 2))
    assert "pool" not in prior.state_dict()  # derived from the default boxes


def test_box_pooling_averages_the_cells_a_box_covers():
    boxes = torch.tensor(
        [
            [0.625, 0.375, 0.25, 0.25],  # exactly cell (row 1, column 2)
            [0.5, 0.125, 0.25, 0.25],  # half of (0, 1), half of (0, 2)
            [0.0, 0.0, 0.25, 0.25],  # a quarter of (0, 0), the rest outside the map
            [0.5, 0.5, 1.0, 1.0],  # everything
        ]
    )
    w = box_pooling(boxes, size=4, cell=0.25)
    assert w.shape == (4, 16)
    assert torch.allclose(w.sum(1), torch.ones(4))
    assert w[0, 1 * 4 + 2] == pytest.approx(1.0)
    assert w[1, 1] == pytest.approx(0.5)
    assert w[1, 2] == pytest.approx(0.5)
    assert w[2, 0] == pytest.approx(1.0)  # only the part on the map counts
    assert torch.allclose(w[3], torch.full((16,), 1 / 16))


def test_a_pooled_prior_classifies_each_box_as_imagenet_classifies_an_image():
    """Logits of the features averaged over the box (the classifier is linear): on a 3x3
    map, each cell has two boxes, the cell itself and the whole map; the dog cell's own box
    is a dog, a whole-map box has a ninth of its dog logit."""
    boxes = cell_boxes(3, 2)
    boxes[1::2] = torch.tensor([0.5, 0.5, 1.0, 1.0])
    prior = ImageNetClassPrior(["person", "dog"], box_pooling(boxes, 3, 1 / 3), in_channels=8)
    one_hot_classifier(prior)
    f = torch.zeros(1, 8, 3, 3)
    f[0, 0, 1, 2] = 45.0
    p_dog = prior(f).exp()[0, :, 2]
    assert p_dog.shape == (18,)
    dog_cell = 1 * 3 + 2
    assert p_dog[2 * dog_cell] == pytest.approx(1.0, abs=1e-4)
    assert p_dog[0] == pytest.approx(len(IMAGENET_GROUPS["dog"]) / 1000, abs=1e-5)
    e = float(torch.tensor(5.0).exp())  # the whole map: dog logit 45 / 9, the other 999 zero
    whole = (len(IMAGENET_GROUPS["dog"]) - 1 + e) / (999 + e)
    assert torch.allclose(p_dog[1::2], torch.full((9,), whole), atol=1e-5)


def test_a_prior_model_pools_the_default_boxes_of_the_10x10_map_and_larger():
    model = SSD(make_spec("mobilenet_v2", ["dog"], class_prior="imagenet"))
    pool = model.head.prior.pool
    start = 38 * 38 * 4 + 19 * 19 * 6
    assert pool.shape == (600 + 150 + 36 + 4, 10 * 10)
    assert torch.equal(pool, box_pooling(model.priors[start:], 10, 32 / 300))
    # a centre cell's 3:1 box spans more columns than rows, its 1:3 box the opposite
    wide, tall = (pool[55 * 6 + i].view(10, 10) > 0 for i in (4, 5))
    assert wide.any(0).sum() > wide.any(1).sum()
    assert tall.any(1).sum() > tall.any(0).sum()
    assert (pool[-3] > 0).all()  # the 1x1 map's second square box sees every cell


def test_loading_the_classifier_needs_its_tensors():
    with pytest.raises(ConfigError, match="x.pth: no ImageNet classifier"):
        ImageNetClassPrior(["dog"], torch.ones(1, 1)).load_imagenet({}, "x.pth")


def test_a_prior_model_adds_the_prior_to_the_10x10_map_and_the_larger_ones():
    torch.manual_seed(0)
    spec = make_spec("mobilenet_v2", ["person", "dog"], class_prior="imagenet")
    with_prior = SSD(spec).eval()
    assert with_prior.head.prior is not None
    assert with_prior.head.prior_source == PRIOR_MAP
    assert with_prior.head.prior_maps == (2, 3, 4, 5)
    without = SSD(make_spec("mobilenet_v2", ["person", "dog"])).eval()
    state = {k: v for k, v in with_prior.state_dict().items() if ".prior." not in k}
    without.load_state_dict(state)
    x = torch.rand(1, 3, 300, 300) * 255
    with torch.no_grad():
        loc_a, conf_a = with_prior(x)
        loc_b, conf_b = without(x)
        feats = with_prior.backbone(with_prior.normalize(x))
        prior = with_prior.head.prior(feats[PRIOR_MAP])
    assert torch.equal(loc_a, loc_b)
    start = 38 * 38 * 4 + 19 * 19 * 6
    assert torch.allclose(conf_a[:, :start], conf_b[:, :start])
    assert torch.allclose(conf_a[:, start:], conf_b[:, start:] + prior, atol=1e-5)


def test_the_spec_names_the_prior_only_when_there_is_one():
    plain = make_spec("mobilenet_v2", VOC)
    assert "class_prior" not in json.loads(plain.to_json())  # older files read the same
    spec = make_spec("mobilenet_v2", VOC, class_prior="imagenet")
    assert ModelSpec.from_json(spec.to_json()).class_prior == "imagenet"
    with pytest.raises(ConfigError, match="needs the mobilenet_v2 backbone"):
        make_spec("vgg16", VOC, class_prior="imagenet")
    with pytest.raises(ConfigError, match="unknown class prior 'clip'"):
        make_spec("mobilenet_v2", VOC, class_prior="clip")


def test_hold_grouped_weights_keeps_them_at_zero_through_sgd_with_weight_decay():
    torch.manual_seed(0)
    model = SSD(make_spec("mobilenet_v2", ["person", "dog"], class_prior="imagenet"))
    conv = model.head.conf[PRIOR_MAP]
    rows = grouped_channels(model)
    assert rows == [a * 3 + 2 for a in range(6)]  # dog of each box shape; not bg, not person
    assert hold_grouped_weights(model) == 6 + 6 + 4 + 4  # maps 2 to 5
    for k in (3, 4, 5):
        assert not model.head.conf[k].weight[grouped_channels(model, k)].any()
    assert not conv.weight[rows].any()
    free = [r for r in range(conv.out_channels) if r not in rows]
    bias_before, free_before = conv.bias.detach().clone(), conv.weight[free].detach().clone()
    opt = torch.optim.SGD(model.head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        _, c = model(torch.rand(2, 3, 300, 300) * 255)
        c.logsumexp(-1).mean().backward()
        opt.step()
    assert not conv.weight[rows].any()
    assert not torch.equal(conv.weight[free], free_before)  # bg and person learn features
    assert not torch.equal(conv.bias[rows], bias_before[rows])  # the dog biases learn
    assert model.head.prior.classifier.weight.grad is None  # the classifier is fixed


def test_the_teacher_loss_is_zero_for_imagenets_own_backbone_and_trains_a_drifted_one():
    from training.imagenet_prior import ImageNetTeacher
    from training.importers import (
        import_torchvision_mobilenet_v2,
        mobilenet_v2_imagenet_path,
        read_checkpoint,
    )

    imagenet = read_checkpoint(mobilenet_v2_imagenet_path())
    model = import_torchvision_mobilenet_v2(imagenet, ["dog"], class_prior="imagenet")
    model.backbone.freeze_statistics()
    model.train()
    bn = [m for m in model.backbone.features.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn
    assert not any(m.training for m in bn)  # ImageNet's statistics, as the teacher's
    assert all(m.training for m in model.backbone.extras.modules())
    teacher = ImageNetTeacher(imagenet)
    teacher.train()
    assert not teacher.training
    teacher.watch(model)
    x = torch.rand(2, 3, 300, 300) * 255
    model(x)
    assert teacher.loss(model, x).item() < 1e-6
    with torch.no_grad():
        model.backbone.features[17].conv[0][0].weight.mul_(1.5)
    model(x)
    loss = teacher.loss(model, x)
    assert loss.item() > 1e-3
    loss.backward()
    assert model.backbone.features[17].conv[0][0].weight.grad.abs().sum() > 0
    assert model.head.prior.classifier.weight.grad is None


def imagenet_state():
    from training.importers import mobilenet_v2_imagenet_path, read_checkpoint

    return read_checkpoint(mobilenet_v2_imagenet_path())


def test_the_twin_is_imagenets_backbone_frozen_and_always_in_eval_mode():
    from training.importers import import_torchvision_mobilenet_v2

    model = import_torchvision_mobilenet_v2(imagenet_state(), ["dog"], class_prior="imagenet-twin")
    twin = model.prior_twin
    assert twin is not None
    model.train()
    assert not twin.training
    assert not any(m.training for m in twin.modules())  # ImageNet's batch-norm statistics
    assert not any(p.requires_grad for p in twin.parameters())
    model.eval()
    x = model.normalize(torch.rand(1, 3, 300, 300) * 255)
    with torch.no_grad():  # freshly imported, the detector's map is still ImageNet's too
        assert torch.allclose(twin(x), model.backbone(x)[PRIOR_MAP], atol=1e-5)


def test_a_twin_prior_reads_the_twin_and_leaves_the_detector_as_it_was():
    """with_imagenet_prior(kind='imagenet-twin') on a trained (here: random) detector: boxes
    and the small maps' scores are the detector's; those of the 10x10 map and the larger ones
    gain the prior read on the twin, not on the detector's own map."""
    from training.imagenet_prior import with_imagenet_prior

    torch.manual_seed(0)
    detector = SSD(make_spec("mobilenet_v2", ["person", "dog"])).eval()
    model = with_imagenet_prior(detector, imagenet_state(), "imagenet-twin").eval()
    assert model.spec.class_prior == "imagenet-twin"
    x = torch.rand(1, 3, 300, 300) * 255
    with torch.no_grad():
        loc_a, conf_a = model(x)
        loc_b, conf_b = detector(x)
        twin = model.prior_twin(model.normalize(x))
        own = model.backbone(model.normalize(x))[PRIOR_MAP]
        prior = model.head.prior(twin)
        assert not torch.allclose(model.head.prior(own), prior, atol=1e-2)
    assert torch.equal(loc_a, loc_b)
    start = 38 * 38 * 4 + 19 * 19 * 6
    assert torch.allclose(conf_a[:, :start], conf_b[:, :start])
    assert torch.allclose(conf_a[:, start:], conf_b[:, start:] + prior, atol=1e-5)


def test_a_twin_model_saves_and_loads_whole(tmp_path):
    from training.imagenet_prior import with_imagenet_prior
    from training.weights import load_detector, save_detector

    torch.manual_seed(0)
    detector = SSD(make_spec("mobilenet_v2", ["dog"]))
    model = with_imagenet_prior(detector, imagenet_state(), "imagenet-twin").eval()
    loaded = load_detector(save_detector(model, tmp_path / "twin.safetensors")).eval()
    assert loaded.spec.class_prior == "imagenet-twin"
    x = torch.rand(1, 3, 300, 300) * 255
    with torch.no_grad():
        assert torch.allclose(model(x)[1], loaded(x)[1], atol=1e-4)
    assert ModelSpec.from_json(model.spec.to_json()).class_prior == "imagenet-twin"
