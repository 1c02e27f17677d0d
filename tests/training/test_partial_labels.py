"""Several datasets in one run, and partial labels: a dataset labels only the classes it
names, so its images are no evidence against the others (training/loss.py,
training/datasets.py, training/evaluate.py)."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.datasets import DataError, load_dataset, load_datasets, parse_data_spec
from training.evaluate import ImageDetections, coco_evaluate, voc_evaluate
from training.loss import MultiBoxLoss, hard_negative_mask, partial_negative_loss

ROOT = Path(__file__).resolve().parents[2]


def todays_loss(loc, conf, loc_targets, labels, neg_pos_ratio=3.0):
    """MultiBoxLoss.forward as it was before partial labels (commit 4dbc350), verbatim."""
    positives = labels > 0
    num_pos = positives.sum()
    ce = F.cross_entropy(conf.flatten(0, 1), labels.flatten(), reduction="none")
    ce = ce.view_as(labels)
    negatives = hard_negative_mask(ce, positives, neg_pos_ratio)
    conf_loss = ce[positives | negatives].sum()
    loc_loss = F.smooth_l1_loss(loc[positives], loc_targets[positives], beta=1.0, reduction="sum")
    denom = num_pos.clamp(min=1).to(loc.dtype)
    return conf_loss / denom + loc_loss / denom


def yolo_set(root: Path, names: list[str], labels: dict[str, str], size=64) -> Path:
    """A tiny YOLO dataset: one noise image per entry of `labels` (its label file text)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for stem, text in labels.items():
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), rng.integers(0, 255, (size, size, 3)))
        (root / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"path: .\ntrain: images\nval: images\nnames: {names}\n")
    return root / "data.yaml"


# ------------------------------------------------------------------------------ loss


@pytest.fixture(scope="module")
def real_batch(shared_data):
    """The shipped model's outputs and targets on 4 real coco128 images."""
    from training.data import DetectionDataset, collate
    from training.datasets import load_dataset
    from training.matcher import SSDMatcher, encode_targets
    from training.weights import load_detector

    model = load_detector(ROOT / "assets" / "models" / "ssd300_mobilenet_v2_voc.safetensors")
    names = list(model.spec.class_names)
    data = load_dataset(shared_data / "coco128/annotations/instances_train2017.json", None, names)
    data.samples = [s for s in data.samples if len(s)][:4]
    ds = DetectionDataset(data, train=True, fill=model.spec.mean, seed=3)
    images, boxes, labels, valid, _ = collate([ds[(0, i)] for i in range(4)])
    loc_t, lab_t = encode_targets(SSDMatcher(), model.coder, boxes, labels, valid, model.priors)
    model.train()
    with torch.no_grad():
        loc, conf = model(images.float())
    return loc, conf, loc_t, lab_t


def test_fully_labeled_data_gives_todays_loss_bit_for_bit(real_batch):
    loc, conf, loc_t, lab_t = real_batch
    assert int((lab_t > 0).sum()) > 10  # a real batch with objects
    nobody = torch.zeros(conf.shape[0], conf.shape[2], dtype=torch.bool)
    grads = []
    for unlabeled in (None, nobody, "today"):
        c = conf.clone().requires_grad_(True)
        if unlabeled == "today":
            total = todays_loss(loc, c, loc_t, lab_t)
        else:
            total = MultiBoxLoss()(loc, c, loc_t, lab_t, unlabeled).total
        total.backward()
        grads.append((total.detach(), c.grad))
    for total, grad in grads[1:]:
        assert torch.equal(total, grads[0][0])
        assert torch.equal(grad, grads[0][1])


def test_fully_labeled_images_keep_their_gradient_beside_partial_ones(real_batch):
    loc, conf, loc_t, lab_t = real_batch
    partial = torch.zeros(conf.shape[0], conf.shape[2], dtype=torch.bool)
    partial[2:, 2:] = True  # images 2 and 3 label only class 1
    grads = []
    for unlabeled in (None, partial):
        c = conf.clone().requires_grad_(True)
        MultiBoxLoss()(loc, c, loc_t, lab_t, unlabeled).total.backward()
        grads.append(c.grad)
    assert torch.equal(grads[0][:2], grads[1][:2])  # images 0 and 1: bit for bit
    assert not torch.equal(grads[0][2:], grads[1][2:])


def test_an_unlabeled_class_is_not_pushed_down_where_it_is_unlabeled():
    g = torch.Generator().manual_seed(0)
    b, n, c = 2, 40, 4  # classes: background, person, car, dog
    conf = torch.randn(b, n, c, generator=g).requires_grad_(True)
    loc = torch.zeros(b, n, 4)
    labels = torch.zeros(b, n, dtype=torch.long)
    labels[:, :3] = 1  # three person boxes in each image
    unlabeled = torch.tensor([[False, False, True, True], [False] * 4])  # image 0: people only
    MultiBoxLoss(neg_pos_ratio=100)(
        loc, conf, torch.zeros(b, n, 4), labels, unlabeled
    ).total.backward()
    negatives = labels == 0  # with ratio 100 every negative is mined
    grad = conf.grad
    # image 0: car and dog only pulled up (never pushed down), person pushed down
    assert (grad[0][negatives[0]][:, 2:] <= 0).all()
    assert (grad[0][negatives[0]][:, 1] > 0).all()
    # image 1 (labels every class): every class is pushed down at its background boxes
    assert (grad[1][negatives[1]][:, 1:] > 0).all()


def test_the_partial_negative_loss_is_minus_log_of_the_summed_probabilities():
    conf = torch.tensor([[[0.5, 2.0, 1.0, -1.0]]])
    unlabeled = torch.tensor([[False, False, True, True]])
    p = conf.softmax(-1)[0, 0]
    expected = -torch.log(p[0] + p[2] + p[3])
    torch.testing.assert_close(partial_negative_loss(conf, unlabeled)[0, 0], expected)


def test_hard_negatives_are_ranked_by_the_partial_loss():
    # box 1: a confident "car" in an image that does not label cars: a cheap negative;
    # box 2: a confident "person": the hardest negative. One positive: 1 negative kept.
    conf = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.0, 6.0], [0.0, 3.0, 0.0], [5.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 0, 0, 0]])
    unlabeled = torch.tensor([[False, False, True]])
    conf.requires_grad_(True)
    MultiBoxLoss(neg_pos_ratio=1)(
        torch.zeros(1, 4, 4), conf, torch.zeros(1, 4, 4), labels, unlabeled
    ).total.backward()
    assert conf.grad[0, 2].abs().sum() > 0  # the person box is the mined negative
    assert conf.grad[0, 1].abs().sum() == 0  # the car box is not
    # when cars are labeled, the car box is the hardest
    conf.grad = None
    MultiBoxLoss(neg_pos_ratio=1)(
        torch.zeros(1, 4, 4), conf, torch.zeros(1, 4, 4), labels
    ).total.backward()
    assert conf.grad[0, 1].abs().sum() > 0


# ------------------------------------------------------------------------------ data


def test_a_dataset_labels_the_classes_it_names(shared_data):
    person = load_dataset(shared_data / "coco-person/data.yaml", "test", ["car", "person", "dog"])
    assert person.labeled == ["person"]
    s = person.samples[0]
    assert s.labeled.tolist() == [True, False, True, False]
    assert "labels 1 of the 3 classes: person" in person.report()
    # a class list the data names entirely: fully labeled, no masks
    whole = load_dataset(shared_data / "coco-person/data.yaml", "test")
    assert whole.labeled is None
    assert whole.samples[0].labeled is None
    assert "labels all 1 classes" in whole.report()


def test_coco_labels_its_categories_even_without_boxes_of_them(shared_data):
    coco = load_dataset(
        shared_data / "coco128/annotations/instances_train2017.json", None, ["person", "cow"]
    )
    assert coco.class_counts()["cow"] == 0  # no cow in coco128, but COCO names the category
    assert coco.labeled is None


def test_several_datasets_merge_by_class_name(tmp_path):
    people = yolo_set(tmp_path / "p", ["person"], {"a": "0 0.5 0.5 0.4 0.4\n", "b": ""})
    cars = yolo_set(
        tmp_path / "c", ["car", "person"], {"x": "0 0.3 0.3 0.2 0.2\n1 0.7 0.7 0.2 0.2\n"}
    )
    data = load_datasets([f"{people}:train", f"{cars}:val"])
    assert data.class_names == ["car", "person"]  # the union, sorted
    assert [s.labels.tolist() for s in data.samples] == [[2], [], [1, 2]]
    assert data.samples[0].labeled.tolist() == [True, False, True]
    assert data.samples[2].labeled is None
    assert data.partially_labeled
    text = data.report()
    assert text.startswith("2 datasets: 3 images, 3 boxes, 2 classes")
    assert "labels 1 of the 2 classes: person" in text
    assert "p/data.yaml (train)" in text
    assert "c/data.yaml (val)" in text
    # with the model's class list the datasets follow it
    data = load_datasets([str(people), str(cars)], "train", ["person", "dog", "car"])
    assert [s.labels.tolist() for s in data.samples] == [[1], [], [3, 1]]
    assert data.samples[2].labeled.tolist() == [True, True, False, True]


def test_the_data_spec_syntax(tmp_path):
    (tmp_path / "a:b").mkdir()
    assert parse_data_spec(str(tmp_path / "a:b"), "val") == (str(tmp_path / "a:b"), "val")
    assert parse_data_spec(f"{tmp_path}:train", "val") == (str(tmp_path), "train")
    assert parse_data_spec(f"{tmp_path}", None) == (str(tmp_path), None)
    with pytest.raises(DataError, match="dataset not found: /nowhere"):
        parse_data_spec("/nowhere:train")


def test_data_without_boxes_of_the_model_classes_cannot_train(tmp_path):
    cats = yolo_set(tmp_path / "cats", ["cat"], {"a": "0 0.5 0.5 0.4 0.4\n"})
    with pytest.raises(DataError, match=r"0 boxes of the model's 1 classes in 1 images \(its 1"):
        load_datasets(str(cats), "train", ["dog"], require_boxes=True)
    empty = yolo_set(tmp_path / "empty", ["dog"], {"a": ""})
    dogs = yolo_set(tmp_path / "dogs", ["dog"], {"a": "0 0.5 0.5 0.4 0.4\n"})
    with pytest.raises(DataError, match=r"\(it has no boxes\); a dataset must have boxes to train"):
        load_datasets([str(dogs), str(empty)], "train", ["dog"], require_boxes=True)
    # for evaluation, data without boxes is fine
    assert load_datasets(str(empty), "train", ["dog"]).num_boxes == 0


def test_train_refuses_zero_boxes_in_one_line(tmp_path):
    cats = yolo_set(tmp_path / "cats", ["cat"], {"a": "0 0.5 0.5 0.4 0.4\n"})
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "train", "--data", f"{cats}:train"]
        + ["--classes", "dog,bird", "--epochs", "1", "--output", str(tmp_path / "run")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert "0 boxes of the model's 2 classes" in err[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "last.ckpt").exists()


# ------------------------------------------------------------------------------ evaluation


def test_evaluation_scores_a_class_only_where_it_is_labeled(tmp_path):
    people = yolo_set(tmp_path / "p", ["person"], {"a": "0 0.5 0.5 0.4 0.4\n"})
    full = yolo_set(tmp_path / "f", ["person", "car"], {"x": "1 0.3 0.3 0.2 0.2\n"})
    data = load_datasets([str(people), str(full)], "train", ["person", "car"])
    person_box = np.array([[0.3, 0.3, 0.7, 0.7]])
    car_box = np.array([[0.2, 0.2, 0.4, 0.4]])
    dets = [
        # the people image: its person, and a "car" that nobody labeled there
        ImageDetections(
            np.vstack([person_box, [[0.0, 0.0, 0.1, 0.1]]]), np.array([0.9, 0.95]), np.array([1, 2])
        ),
        ImageDetections(car_box, np.array([0.8]), np.array([2])),
    ]
    voc = voc_evaluate(dets, data)
    ap = {r["class"]: r["ap"] for r in voc["per_class"]}
    assert ap == {"person": 1.0, "car": 1.0}  # the unlabeled "car" is not a false positive
    assert coco_evaluate(dets, data)["AP50"] == pytest.approx(1.0)
    # the same detections, the people set labeling cars too: the "car" is a false positive
    both = yolo_set(tmp_path / "b", ["person", "car"], {"a": "0 0.5 0.5 0.4 0.4\n"})
    data = load_datasets([str(both), str(full)], "train", ["person", "car"])
    ap = {r["class"]: r["ap"] for r in voc_evaluate(dets, data)["per_class"]}
    assert ap["car"] == pytest.approx(0.5)


def test_several_data_options_reach_the_config(tmp_path):
    import argparse

    from engine.commands import train as run_commands
    from training.config import TrainConfig
    from training.errors import ConfigError

    parser = argparse.ArgumentParser()
    run_commands.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "a.yaml:train", "--data", "b.json"])
    assert run_commands.config_from_args(args).data == ["a.yaml:train", "b.json"]
    args = parser.parse_args(["train", "--data", "a.yaml", "--val-data", "v.yaml:val"])
    cfg = run_commands.config_from_args(args)
    assert (cfg.data, cfg.val_data) == ("a.yaml", "v.yaml:val")
    config = tmp_path / "run.yaml"
    config.write_text("data: [a.yaml, b.json]\nval_data: v.yaml\n")
    assert TrainConfig.from_yaml(config).data == ["a.yaml", "b.json"]
    with pytest.raises(ConfigError, match="data must be text or a list of texts"):
        TrainConfig().updated({"data": [1, 2]})
