from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import check_images
from training.datasets import VOC_COCO_NAMES, DataError, load_dataset


def test_voc_folder_with_csv_splits(shared_data):
    root = shared_data / "raccoon"
    train = load_dataset(root, "splits/train_labels.csv")
    test = load_dataset(root, "splits/test_labels.csv")
    everything = load_dataset(root)
    assert (len(train.samples), train.num_boxes) == (160, 173)
    assert (len(test.samples), test.num_boxes) == (40, 44)
    assert (len(everything.samples), everything.num_boxes) == (200, 217)
    assert train.class_names == ["raccoon"]
    assert not train.problems
    s = train.samples[0]
    assert s.boxes.dtype == np.float32
    assert (s.boxes >= 0).all()
    assert (s.boxes <= 1).all()
    assert set(s.labels.tolist()) == {1}


def test_coco_json(shared_data):
    data = load_dataset(shared_data / "coco128" / "annotations" / "instances_train2017.json")
    assert len(data.samples) == 128
    assert data.num_boxes == 939 - 10  # the 10 crowd boxes are left out
    assert data.crowd_boxes == 10
    assert len(data.class_names) == 80
    assert data.class_names[0] == "person"
    assert data.category_ids[:3] == [1, 2, 3]
    assert data.category_ids[-1] == 90  # toothbrush: ids have gaps, labels do not
    assert all(s.image.is_file() for s in data.samples)


def test_yolo_data_yaml(shared_data):
    data = load_dataset(shared_data / "coco128-val-yolo" / "data.yaml", "val")
    assert (len(data.samples), data.num_boxes) == (128, 898)
    assert data.class_names[:3] == ["person", "bicycle", "car"]
    counts = data.class_counts()
    assert sum(counts.values()) == 898


def test_a_given_class_list_relabels_and_reports_unknown_classes(shared_data):
    yaml_path = shared_data / "coco128-val-yolo" / "data.yaml"
    data = load_dataset(yaml_path, "val", ["dog", "person"])
    assert data.class_names == ["dog", "person"]
    full = load_dataset(yaml_path, "val")
    people = full.class_counts()["person"]
    assert data.class_counts()["person"] == people
    assert data.num_boxes == people + full.class_counts()["dog"]
    assert data.left_out["car"] == full.class_counts()["car"]
    assert "left out" in data.report()
    assert "car (" in data.report()


def _write_devkit(root: Path) -> Path:
    year = root / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / d).mkdir(parents=True)
    objects = {
        "000001": [("dog", 10, 20, 50, 60, 0), ("person", 5, 5, 30, 90, 1)],
        "000002": [
            ("cat", 1, 1, 100, 80, 0),
            ("dog", 120, 10, 150, 40, 0),
            ("dog", 8, 7, 7, 30, 0),
        ],
        "000003": [("bird", 3, 3, 20, 20, 0)],
    }
    for stem, objs in objects.items():
        cv2.imwrite(str(year / "JPEGImages" / f"{stem}.jpg"), np.full((80, 100, 3), 90, np.uint8))
        xml = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin>"
            f"<ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
            for n, a, b, c, e, d in objs
        )
        (year / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>100</width>"
            f"<height>80</height><depth>3</depth></size>{xml}</annotation>"
        )
    (year / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n000003\n000004\n")
    (year / "ImageSets/Main/test.txt").write_text("000003\n")
    return root


def test_voc_devkit_difficult_flags_and_broken_boxes(tmp_path):
    root = _write_devkit(tmp_path / "VOCdevkit")
    data = load_dataset(root, "trainval", ["cat", "dog", "person"])
    reasons = [f"{Path(p.file).name}: {p.reason}" for p in data.problems]
    assert any("000004.xml: annotation missing" in r for r in reasons)
    assert any("outside the image" in r for r in reasons)  # dog at x 120..150 in a 100 px image
    assert any("zero area" in r for r in reasons)  # xmax = xmin - 1: [7, 7] in continuous pixels
    assert data.left_out == {"bird": 1}
    assert len(data.samples) == 3  # 000003 stays, with no boxes
    first = data.samples[0]
    assert first.difficult.tolist() == [False, True]
    # VOC's 1-based inclusive pixels: [xmin - 1, xmax] / size
    np.testing.assert_allclose(first.boxes[0], [9 / 100, 19 / 80, 50 / 100, 60 / 80], rtol=1e-6)
    assert "skipped 3 item(s)" in data.report()
    assert "left out 1 boxes of 1 classes the model does not have: bird (1)" in data.report()
    test = load_dataset(root, "VOC2007/test")
    assert test.class_names == ["bird"]


def test_unreadable_images_are_skipped_with_their_name(tmp_path):
    root = _write_devkit(tmp_path / "VOCdevkit")
    (root / "VOC2007/JPEGImages/000002.jpg").write_bytes(b"not a jpeg")
    data = check_images(load_dataset(root, "trainval"))
    assert len(data.samples) == 2
    assert any(p.file.endswith("000002.jpg") and "unreadable" in p.reason for p in data.problems)


def test_truncated_images_and_images_whose_every_box_is_broken_are_left_out(tmp_path, shared_data):
    """A cut-off JPEG decodes (grey below the cut) without an error: it is listed and left
    out, not trained on. An image whose only boxes are broken is left out too: kept, it
    would be trained on and scored as an image without objects."""
    root = _write_devkit(tmp_path / "VOCdevkit")
    real = sorted((shared_data / "raccoon").rglob("*.jpg"))[0].read_bytes()
    (root / "VOC2007/JPEGImages/000001.jpg").write_bytes(real[: len(real) // 2])
    assert cv2.imread(str(root / "VOC2007/JPEGImages/000001.jpg")) is not None  # silently grey
    year = root / "VOC2007"
    cv2.imwrite(str(year / "JPEGImages/000005.jpg"), np.full((80, 100, 3), 90, np.uint8))
    (year / "Annotations/000005.xml").write_text(
        "<annotation><filename>000005.jpg</filename><size><width>100</width><height>80"
        "</height></size><object><name>dog</name><bndbox><xmin>150</xmin><ymin>10</ymin>"
        "<xmax>190</xmax><ymax>40</ymax></bndbox></object></annotation>"
    )
    (year / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n000003\n000005\n")
    data = load_dataset(root, "trainval", ["cat", "dog", "person"])
    assert [s.image.stem for s in data.samples] == ["000002", "000003"]
    reasons = {Path(p.file).stem: p.reason for p in data.problems}
    assert reasons["000001"].startswith("truncated image (its data ends early)")
    assert reasons["000005"] == "every box is broken: the image is left out"


def test_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "a.xml").write_text("<annotation><filename>a.jpg</filename>")
    with pytest.raises(DataError, match="no usable images.*unreadable annotation"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="dataset not found"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="split list not found"):
        load_dataset(tmp_path, "nope.csv")
    (tmp_path / "empty").mkdir()  # was an IndexError
    with pytest.raises(DataError, match="empty: no usable images \\(no VOC folder annotations"):
        load_dataset(tmp_path / "empty")


def test_yolo_layout_with_train_images_and_real_sizes(tmp_path, shared_data):
    from training.evaluate import ImageDetections, coco_evaluate

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((200, 400, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((100, 100, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n1 0.1 0.1 0.05 0.05\nbad\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images\nnames: [cat, dog]\n")
    data = load_dataset(tmp_path / "data.yaml", "train")
    assert len(data.samples) == 2  # b.png has no label file: an image without objects
    a = data.samples[0]
    assert (a.width, a.height) == (400, 200)
    assert len(a) == 2
    assert any("malformed line 'bad'" in p.reason for p in data.problems)
    # sizes are real, so COCO's size ranges mean something: 200x100 px is 'large'
    dets = [ImageDetections(s.boxes, np.ones(len(s)), s.labels) for s in data.samples]
    r = coco_evaluate(dets, data)
    assert r["AP_large"] == pytest.approx(1.0)
    assert r["AP_small"] == pytest.approx(1.0)  # the 20x10 px dog


def test_malformed_files_are_errors_or_problems_not_crashes(tmp_path):
    (tmp_path / "data.yaml").write_text("names: [a\n")
    with pytest.raises(DataError, match="unreadable"):
        load_dataset(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text("- a\n- b\n")
    with pytest.raises(DataError, match="expected a mapping"):
        load_dataset(tmp_path / "data.yaml")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "x.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "data.yaml").write_text("train: images\nnames: [a]\n")
    with pytest.raises(DataError, match="no label files"):
        load_dataset(tmp_path / "data.yaml", "train")
    voc = tmp_path / "voc"
    (voc / "annotations").mkdir(parents=True)
    cv2.imwrite(str(voc / "annotations" / "p.jpg"), np.zeros((10, 10, 3), np.uint8))
    (voc / "annotations" / "p.xml").write_text(
        "<annotation><filename>p.jpg</filename><size><width>abc</width></size></annotation>"
    )
    with pytest.raises(DataError, match="unreadable annotation"):
        load_dataset(voc)
    coco = tmp_path / "instances_x.json"
    coco.write_text(
        '{"categories": [{"id": 1, "name": "a"}], "images": [{"id": 1, "file_name": "x.jpg",'
        ' "width": 10, "height": 10}], "annotations": [{"id": 5, "image_id": 1, "category_id": 1}]}'
    )
    data = load_dataset(coco, str(tmp_path / "images"))
    assert any("malformed annotation 5" in p.reason for p in data.problems)


def test_the_sampler_splits_ranks_evenly_and_resumes_mid_epoch():
    from training.data import EpochBatchSampler

    shares = [EpochBatchSampler(23, 4, epoch=3, rank=r, world_size=2).indices() for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 11
    assert not set(shares[0]) & set(shares[1])
    full = list(EpochBatchSampler(23, 4, epoch=3))
    assert [len(b) for b in full] == [4, 4, 4, 4, 4, 3]
    assert list(EpochBatchSampler(23, 4, epoch=3, start_step=4)) == full[4:]
    assert list(EpochBatchSampler(23, 4, epoch=3)) == full  # deterministic
    assert list(EpochBatchSampler(23, 4, epoch=4)) != full
    assert [len(b) for b in EpochBatchSampler(21, 4, min_batch=2)] == [4, 4, 4, 4, 4]


def test_coco_names_of_voc_classes_map_to_the_voc_list(shared_data):
    from training.spec import load_class_names

    voc = load_class_names("voc")
    coco = shared_data / "coco128" / "annotations" / "instances_train2017.json"
    data = load_dataset(coco, None, voc)
    full = load_dataset(coco)
    counts, coco_counts = data.class_counts(), full.class_counts()
    for voc_name, coco_name in VOC_COCO_NAMES.items():
        assert counts[voc_name] == coco_counts[coco_name]
    assert counts["person"] == coco_counts["person"] == 254
    assert "airplane" not in data.left_out
    # Evaluation against the original file needs COCO's category id under either name.
    assert data.category_ids[voc.index("aeroplane")] == 5
    assert data.category_ids[voc.index("tvmonitor")] == 72


def test_repeat_factors_follow_lvis():
    from training.data import class_repeat_factors, repeat_factors

    # 10 images: class 1 in 5 of them, class 2 in 1 (together with class 1), one empty image.
    labels = [np.array([1, 1])] * 3 + [np.array([1, 2]), np.array([1])] + [np.array([3])] * 4
    labels.append(np.zeros(0, np.int64))
    assert len(labels) == 10
    r_class = class_repeat_factors(labels, threshold=0.4)
    assert r_class[1] == 1.0  # in half the images: above the threshold
    assert r_class[2] == pytest.approx(2.0)  # sqrt(0.4 / 0.1)
    assert r_class[3] == 1.0  # sqrt(0.4 / 0.4)
    r = repeat_factors(labels, threshold=0.4)
    assert r.tolist() == pytest.approx([1, 1, 1, 2, 1, 1, 1, 1, 1, 1])  # an image takes its max
    assert repeat_factors(labels, threshold=0.9)[-1] == 1.0  # no objects: shown once
    with pytest.raises(ValueError, match="must be > 0"):
        repeat_factors(labels, 0)


@pytest.mark.parametrize(
    ("repeats", "expected"),
    [
        ([1.0, 2.0, 1.5, 3.5, 1.25, 1.75], [1.0, 2.0, 1.5, 3.5, 1.25, 1.75]),  # sum 11: exact
        # one large and many small fractions (a bias of weighted draws without replacement)
        ([1.8] + [1.1] * 12, [1.8] + [1.1] * 12),
        # 11.8 images fill 12 places: 0.9 + 0.9 scaled to 2 caps the first at 1, the rest share
        ([1.9] + [1.1] * 9, [2.0] + [1 + 0.1 * 1.0 / 0.9] * 9),
    ],
)
def test_repeat_pool_has_a_fixed_length_and_the_right_average(repeats, expected):
    from training.data import repeat_pool

    repeats = np.array(repeats)
    counts = []
    for epoch in range(4000):
        pool = repeat_pool(repeats, np.random.default_rng(epoch))
        assert len(pool) == round(repeats.sum())
        c = np.bincount(pool, minlength=len(repeats))
        assert np.all(c >= np.floor(repeats))
        assert np.all(c <= np.ceil(repeats))
        counts.append(c)
    # Each extra is a Bernoulli draw: 4000 epochs give a standard error <= 0.008.
    assert np.mean(counts, axis=0) == pytest.approx(expected, abs=0.025)


def test_the_sampler_repeats_images_with_their_own_augmentation_keys():
    from training.data import EpochBatchSampler

    repeats = np.array([1.0, 3.0, 1.0, 1.0, 2.0])
    batches = list(EpochBatchSampler(5, 2, epoch=1, repeats=repeats))
    keys = [k for b in batches for k in b]
    assert [len(b) for b in batches] == [2, 2, 2, 2]
    assert sorted(k for k in keys if k[1] == 1) == [(1, 1), (1, 1, 1), (1, 1, 2)]
    assert sorted(k for k in keys if k[1] == 4) == [(1, 4), (1, 4, 1)]
    assert len(set(keys)) == 8  # each copy is augmented differently
    again = list(EpochBatchSampler(5, 2, epoch=1, repeats=repeats))
    assert again == batches  # deterministic, so a resumed run sees the same batches
    assert list(EpochBatchSampler(5, 2, epoch=1, repeats=repeats, start_step=3)) == batches[3:]
    for epoch in range(6):  # copies are numbered over all ranks, not per rank
        ranks = [
            EpochBatchSampler(5, 2, epoch=epoch, repeats=repeats, rank=r, world_size=2)
            for r in (0, 1)
        ]
        assert len(ranks[0]) == len(ranks[1]) == 2
        split = sorted(k for sampler in ranks for b in sampler for k in b)
        whole = sorted(k for b in EpochBatchSampler(5, 2, epoch, repeats=repeats) for k in b)
        assert split == whole
    with pytest.raises(ValueError, match="must be >= 1"):
        EpochBatchSampler(5, 2, repeats=np.array([1.0, 0.5, 1, 1, 1]))
    with pytest.raises(ValueError, match="4 repeat factors for 5 images"):
        EpochBatchSampler(5, 2, repeats=np.ones(4))


def test_a_repeated_copy_is_augmented_differently(shared_data):
    from training.data import DetectionDataset

    data = load_dataset(shared_data / "raccoon", "splits/test_labels.csv")
    ds = DetectionDataset(data, train=True, seed=0)
    first, again, copy = ds[(2, 5)], ds[(2, 5)], ds[(2, 5, 1)]
    assert torch_equal(first[0], again[0])
    assert not torch_equal(first[0], copy[0])


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())
