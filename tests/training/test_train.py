import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.config import TrainConfig, lr_at
from training.errors import ConfigError
from training.train import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[2]


def tiny_split(shared_data, tmp_path, n):
    """A list file naming the first n raccoon training images."""
    names = (shared_data / "raccoon" / "splits" / "train_labels.csv").read_text().splitlines()[1:]
    stems = list(dict.fromkeys(line.split(",")[0] for line in names))[:n]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"first{n}.txt"
    path.write_text("\n".join(stems))
    return path


def config(shared_data, tmp_path, n=4, **kw):
    base = dict(
        data=str(shared_data / "raccoon"),
        split=str(tiny_split(shared_data, tmp_path, n)),
        output=str(tmp_path / "run"),
        backbone="mobilenet_v2",
        batch_size=2,
        workers=0,
        eval_every=0,
        warmup_steps=2,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_a_few_dozen_steps_overfit_a_handful_of_real_images(shared_data, tmp_path):
    losses = []
    cfg = config(shared_data, tmp_path, n=4, batch_size=4, epochs=30, lr=5e-3, augment=False)
    summary = Trainer(cfg, on_step=lambda r: losses.append(r["loss"]), quiet=True).run()
    assert len(losses) == 30
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.4 * first, (first, last)
    assert summary["steps"] == 30
    out = Path(cfg.output)
    assert (out / "last.safetensors").is_file()
    assert (out / "last.ckpt").is_file()
    assert len((out / "log.jsonl").read_text().splitlines()) == 30
    assert list((out / "tb").iterdir())  # TensorBoard event file


def test_resume_after_an_interruption_continues_exactly(shared_data, tmp_path):
    cfg_a = config(shared_data, tmp_path / "a", n=6, epochs=2, lr=5e-3)
    uninterrupted = []
    Trainer(cfg_a, on_step=lambda r: uninterrupted.append(r["loss"]), quiet=True).run()
    assert len(uninterrupted) == 6

    cfg_b = config(shared_data, tmp_path / "b", n=6, epochs=2, lr=5e-3)
    before = []

    def interrupt_after_four(record):
        before.append(record["loss"])
        if record["global_step"] == 4:  # mid-way through the second epoch
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg_b, on_step=interrupt_after_four, quiet=True).run()
    first_part = torch.load(tmp_path / "b" / "run" / "last.ckpt", weights_only=True)["totals"]
    assert first_part["images"] == 8  # 4 steps of 2 images
    after = []
    summary = Trainer(
        cfg_b, resume=True, on_step=lambda r: after.append(r["loss"]), quiet=True
    ).run()
    assert before == uninterrupted[:4]
    assert len(after) == 2
    assert after[0] == pytest.approx(uninterrupted[4], rel=1e-5)
    assert after[1] == pytest.approx(uninterrupted[5], rel=1e-5)
    # the summary covers the whole run, both parts
    assert summary["train_seconds"] >= round(first_part["seconds"], 1)
    assert summary["images_per_s"] == pytest.approx(
        12
        / torch.load(tmp_path / "b" / "run" / "last.ckpt", weights_only=True)["totals"][
            "step_seconds"
        ],
        rel=0.02,
    )


def test_resuming_a_finished_run_says_so_and_changes_nothing(shared_data, tmp_path, capsys):
    cfg = config(shared_data, tmp_path, n=2, epochs=1)
    Trainer(cfg, quiet=True).run()
    run = Path(cfg.output)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    summary = Trainer(cfg, resume=True).run()
    assert "has already done its 1 epochs; nothing to resume" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert summary == json.loads(before["summary.json"])
    # killed after its last checkpoint, before the end: the summary is made from it
    (run / "summary.json").unlink()
    (run / "last.safetensors").unlink()
    again = Trainer(cfg, resume=True).run()
    assert again["steps"] == summary["steps"]
    assert again["train_seconds"] == pytest.approx(summary["train_seconds"], abs=1.0)
    assert json.loads((run / "summary.json").read_text()) == again
    assert (run / "last.safetensors").is_file()


def test_a_diverging_run_stops_with_a_clear_message(shared_data, tmp_path):
    cfg = config(shared_data, tmp_path, n=4, epochs=3, lr=1e4, warmup_steps=0)
    with pytest.raises(TrainingError, match=r"(became (nan|inf)|exploded).*try --lr"):
        Trainer(cfg, quiet=True).run()


def test_resume_refuses_a_checkpoint_of_another_model(shared_data, tmp_path):
    cfg = config(shared_data, tmp_path, n=4, epochs=1)
    Trainer(cfg, quiet=True).run()
    other = config(shared_data, tmp_path, n=2, epochs=2, priors="coco")
    with pytest.raises(TrainingError, match="model differs"):
        Trainer(other, resume=True, quiet=True).run()
    for change, text in [
        ({"batch_size": 4}, "started with --batch-size 2, this command gives --batch-size 4"),
        ({"repeat_threshold": 0.3}, "--repeat-threshold 0.0, this command gives --repeat-thr"),
        ({"freeze_backbone": True}, "no --freeze-backbone, this command gives --freeze-backbone;"),
        ({"seed": 1}, "started with --seed 0, this command gives --seed 1;"),
    ]:
        with pytest.raises(TrainingError, match=text):
            Trainer(cfg.updated({"epochs": 2, **change}), resume=True, quiet=True).run()
    fresh = config(shared_data, tmp_path / "fresh", n=2, epochs=1)
    with pytest.raises(TrainingError, match="nothing to resume"):
        Trainer(fresh, resume=True, quiet=True).run()


def test_config_file_and_command_line(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 7\nlr: 0.002\nschedule: cosine\n")
    cfg = TrainConfig.from_yaml(path)
    assert (cfg.epochs, cfg.lr, cfg.schedule, cfg.momentum) == (7, 0.002, "cosine", 0.9)
    assert cfg.updated({"lr": 0.01}).lr == 0.01
    path.write_text("epoch: 7\n")
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="schedule must be"):
        TrainConfig(data="x", schedule="linear").validate()
    for name, value, text in [
        ("workers", -3, r"workers must be at least 0 \(or -1"),
        ("warmup_steps", -1, "warmup_steps must be at least 0"),
        ("checkpoint_minutes", 0, "checkpoint_minutes must be positive"),
        ("momentum", 1.5, r"momentum must be in \[0, 1\)"),
    ]:
        with pytest.raises(ConfigError, match=text):
            TrainConfig(data="x", **{name: value}).validate()
    TrainConfig(data="x", workers=-1).validate()  # the default: automatic


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, warmup_factor=1 / 3, milestones=[0.5, 0.75])
    assert lr_at(cfg, 0, 100) == pytest.approx(1 / 3)
    assert lr_at(cfg, 5, 100) == pytest.approx(2 / 3)
    assert lr_at(cfg, 10, 100) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 80, 100) == pytest.approx(0.01)
    cos = TrainConfig(lr=1.0, warmup_steps=0, schedule="cosine")
    assert lr_at(cos, 50, 100) == pytest.approx(0.5)
    assert lr_at(cos, 100, 100) == pytest.approx(0.0)


def run_main(*args, cwd=ROOT, extra_env=None):
    import os

    env = {**os.environ, **(extra_env or {})}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def train_args(shared_data, split, out, epochs, batch):
    """`main.py train` on a raccoon list file, validated on the same images, on the CPU."""
    raccoon = shared_data / "raccoon"
    return ["train", "--data", raccoon, "--split", split, "--val-data", raccoon,
            "--val-split", split, "--epochs", str(epochs), "--batch-size", str(batch),
            "--workers", "0", "--device", "cpu", "--output", out]  # fmt: skip


def test_train_and_eval_commands(shared_data, tmp_path):
    split = tiny_split(shared_data, tmp_path, 4)
    out = tmp_path / "run"
    r = run_main("main.py", *train_args(shared_data, split, out, epochs=1, batch=2))
    assert r.returncode == 0, r.stderr
    assert "validation AP50" in r.stdout
    assert (out / "best.safetensors").is_file()
    res = tmp_path / "eval.json"
    r = run_main(
        "main.py",
        "eval",
        out / "best.safetensors",
        "--data",
        shared_data / "raccoon",
        "--split",
        split,
        "--json",
        res,
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr
    assert "raccoon" in r.stdout
    assert "COCO: mAP@[.5:.95]" in r.stdout
    result = json.loads(res.read_text())
    assert result["images"] == 4
    assert 0.0 <= result["voc"]["map"] <= 1.0
    r = run_main("main.py", "train", "--data", tmp_path / "nowhere", "--output", out)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: dataset not found: {tmp_path / 'nowhere'}"


def test_distributed_training_runs_two_cpu_processes_to_the_end(shared_data, tmp_path):
    split = tiny_split(shared_data, tmp_path, 8)
    out = tmp_path / "ddp"
    r = run_main(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "main.py",
        *train_args(shared_data, split, out, epochs=2, batch=4),
        extra_env={"OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4  # 8 images / 2 processes / 2 per process, 2 epochs
    assert (out / "best.safetensors").is_file()
    assert r.stdout.count("done:") == 1  # only rank 0 reports
    steps = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert sum("loss" in s for s in steps) == 4


def test_checkpoints_never_hold_pickled_code(shared_data, tmp_path):
    cfg = config(shared_data, tmp_path, n=2, epochs=1)
    Trainer(cfg, quiet=True).run()
    state = torch.load(Path(cfg.output) / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1
    assert state["global_step"] == 1


def test_an_interruption_at_an_epoch_boundary_loses_no_epoch(shared_data, tmp_path, monkeypatch):
    cfg = config(shared_data, tmp_path, n=4, epochs=3, lr=5e-3)
    calls = {"n": 0}
    real = Trainer._checkpoint

    def flaky(self, epoch, step, global_step, best):
        calls["n"] += 1
        if calls["n"] == 1:  # the checkpoint at the end of the first epoch is interrupted
            raise KeyboardInterrupt
        return real(self, epoch, step, global_step, best)

    monkeypatch.setattr(Trainer, "_checkpoint", flaky)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, quiet=True).run()
    monkeypatch.setattr(Trainer, "_checkpoint", real)
    resumed = []
    Trainer(
        cfg, resume=True, on_step=lambda r: resumed.append((r["epoch"], r["step"])), quiet=True
    ).run()
    assert resumed == [(2, 1), (2, 2), (3, 1), (3, 2)]


def test_config_values_are_type_checked(tmp_path):
    path = tmp_path / "cfg.yaml"
    for text, message in [
        ("epochs: ten", "epochs must be a whole number"),
        ("lr: [1]", "lr must be a number"),
        ("amp: maybe", "amp must be true or false"),
        ("milestones: 0.5", "milestones must be a list of numbers"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_yaml(path)
    path.write_text("lr: 1\n")
    assert TrainConfig.from_yaml(path).lr == 1.0
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        TrainConfig.from_yaml(path)


def test_repeat_factor_sampling_shows_rare_classes_more_often(tmp_path, capsys):
    import cv2
    import numpy as np

    # Six images of class a; one of them also holds the rare class b.
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), rng.integers(0, 255, (96, 96, 3)))
        extra = "1 0.7 0.7 0.2 0.2\n" if i == 3 else ""
        (tmp_path / "labels" / f"{i}.txt").write_text("0 0.3 0.3 0.3 0.3\n" + extra)
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images\nnames: [a, b]\n")
    cfg = TrainConfig(
        data=str(tmp_path / "data.yaml"),
        split="train",
        output=str(tmp_path / "run"),
        backbone="mobilenet_v2",
        pretrained=False,
        batch_size=2,
        workers=0,
        eval_every=0,
        warmup_steps=1,
        device="cpu",
        epochs=1,
        repeat_threshold=0.5,
    )
    steps = []
    Trainer(cfg, on_step=steps.append).run()
    out = capsys.readouterr().out
    # b is in 1 of 6 images: sqrt(0.5 / (1/6)) = 1.7; 5 + 1.73 images per epoch round to 7.
    assert "repeat-factor sampling (threshold 0.5): 7 images per epoch from 6; " in out
    assert "classes repeated: b x1.7" in out
    assert len(steps) == 3  # 7 images in batches of 2; a last single image is dropped
    with pytest.raises(ConfigError, match="repeat threshold must be between 0"):
        Trainer(cfg.updated({"repeat_threshold": 2}), quiet=True)


def test_repeat_threshold_on_the_command_line(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "train", "--data", str(tmp_path)]
        + ["--repeat-threshold", "-1"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "repeat threshold must be between 0 (off) and 1, got -1.0" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_stop_signal_as_workers_start_waits_until_they_ignore_it(
    shared_data, tmp_path, monkeypatch
):
    """The race behind a SIGTERM to the process group as an epoch or a validation starts:
    a worker signalled before its init function has run must not die (make_loader starts
    workers with the stop signals held, data.stop_signals_held). The init is slowed down so
    that the signal always comes first."""
    import os
    import signal
    import time

    from training import data as D
    from training.datasets import load_dataset

    ignore = D._ignore_stop_signals

    def slow_ignore(worker_id):
        time.sleep(0.3)
        ignore(worker_id)

    monkeypatch.setattr(D, "_ignore_stop_signals", slow_ignore)  # forked workers inherit it
    data = load_dataset(shared_data / "raccoon", str(tiny_split(shared_data, tmp_path, 4)))
    loader = D.make_loader(
        D.DetectionDataset(data, train=False), D.EpochBatchSampler(4, 2, 0, 0), 2
    )
    batches = iter(loader)
    for w in batches._workers:
        os.kill(w.pid, signal.SIGTERM)
    assert len(list(batches)) == 2  # both workers alive, every batch delivered


def test_sigterm_to_the_whole_process_group_saves_a_checkpoint(shared_data, tmp_path):
    """systemd, docker stop and `kill -- -PGID` signal the data-loading workers too: they
    must leave the stop to the main process, which finishes the step and checkpoints."""
    import os
    import signal
    import time

    split = tiny_split(shared_data, tmp_path, 8)
    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "main.py"), "train", "--data", str(shared_data / "raccoon")]
    cmd += ["--split", str(split), "--output", str(out), "--no-pretrained", "--device", "cpu"]
    cmd += ["--batch-size", "2", "--workers", "2", "--epochs", "500", "--eval-every", "0"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        log = out / "log.jsonl"
        while not (log.is_file() and len(log.read_text().splitlines()) >= 6):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        out_text, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err, err
    assert "checkpoint saved" in err + out_text
    assert proc.returncode == 130
    assert (out / "last.ckpt").is_file()


def test_freeze_backbone_trains_only_the_extras_and_heads(shared_data, tmp_path):
    from training.weights import load_detector

    def initial_weights(cfg):
        trainer = Trainer(cfg, quiet=True)
        trainer._build()  # what run() starts from
        return {k: v.clone() for k, v in trainer.model.state_dict().items()}

    cfg = config(shared_data, tmp_path, n=4, epochs=2, lr=5e-3, freeze_backbone=True)
    start = initial_weights(cfg)
    again = initial_weights(cfg)  # the build is deterministic, so run() starts from `start`
    assert all(torch.equal(start[k], again[k]) for k in start)
    Trainer(cfg, quiet=True).run()
    trained = load_detector(Path(cfg.output) / "last.safetensors").state_dict()
    features = [k for k in start if k.startswith("backbone.features.")]
    assert any(k.endswith("running_mean") for k in features)
    for k in features:  # weights and batch-norm statistics as ImageNet left them
        assert torch.equal(trained[k], start[k]), k
    for prefix in ("backbone.extras.", "head.conf.", "head.loc."):
        keys = [k for k in start if k.startswith(prefix) and k.endswith("weight")]
        assert keys, prefix
        assert all(not torch.equal(trained[k], start[k]) for k in keys), prefix


def test_freeze_backbone_needs_trained_backbone_weights(shared_data, tmp_path):
    for change, hint in [
        ({"pretrained": False}, "drop --no-pretrained or give --weights$"),
        ({"backbone": "vgg16_bn"}, "give --weights \\(there is no ImageNet import for vgg16_bn\\)"),
        ({"backbone": "vgg16"}, "give --backbone-weights \\(torchvision's VGG16\\) or --weights"),
    ]:
        cfg = config(shared_data, tmp_path, freeze_backbone=True, **change)
        with pytest.raises(
            ConfigError, match="--freeze-backbone .* backbone would be random: " + hint
        ):
            Trainer(cfg, quiet=True)
    # a model from --weights has a trained backbone whatever the other options say
    config(shared_data, tmp_path, freeze_backbone=True, pretrained=False, weights="w").validate()


def test_freeze_backbone_on_the_command_line(tmp_path):
    import argparse

    from engine.commands.train import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", str(tmp_path), "--freeze-backbone"])
    assert config_from_args(args).freeze_backbone
    args = parser.parse_args(["train", "--data", str(tmp_path)])
    assert not config_from_args(args).freeze_backbone


def test_runs_of_the_removed_class_prior_are_refused_clearly(shared_data, tmp_path):
    """The ImageNet class prior and --backbone-lr-scale were removed: a checkpoint of such
    a run, and a weights file with the prior, are one clear error; a checkpoint of a plain
    run from that time (its optimizer groups carry lr_scale 1) resumes."""
    from training.weights import WeightsError, load_detector

    cfg = config(shared_data, tmp_path, n=2, epochs=1)
    Trainer(cfg, quiet=True).run()
    ckpt = Path(cfg.output) / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    for g in state["optimizer"]["param_groups"]:
        g["lr_scale"] = 1.0
    torch.save(state, ckpt)
    steps = []
    Trainer(
        config(shared_data, tmp_path, n=2, epochs=2), resume=True, quiet=True, on_step=steps.append
    ).run()
    assert len(steps) == 1
    state = torch.load(ckpt, weights_only=True)
    saved = json.loads(state["config"])
    saved["backbone_lr_scale"] = 0.5
    state["config"] = json.dumps(saved)
    torch.save(state, ckpt)
    with pytest.raises(TrainingError, match="ImageNet class prior or --backbone-lr-scale"):
        Trainer(config(shared_data, tmp_path, n=2, epochs=3), resume=True, quiet=True).run()

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(Path(cfg.output) / "last.safetensors"), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    spec = json.loads(meta["spec"])
    spec["class_prior"] = "imagenet-twin"  # as the previous shipped model had
    meta["spec"] = json.dumps(spec)
    save_file(tensors, str(tmp_path / "prior.safetensors"), metadata=meta)
    with pytest.raises(WeightsError, match="prior.safetensors: a model with the ImageNet class"):
        load_detector(tmp_path / "prior.safetensors")


def test_a_full_disk_at_a_later_checkpoint_is_one_line_and_keeps_the_last_one(
    shared_data, tmp_path, capsys, monkeypatch
):
    """torch.save reports a full disk as a RuntimeError from its zip writer: the second
    checkpoint's failure is a one-line error (exit 1), and the first checkpoint stays."""
    import main
    import training.checkpoint as ckpt

    real_save, calls = torch.save, []

    def full_disk_on_the_second(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 2:
            Path(f).write_bytes(b"half a checkpoint")
            raise RuntimeError(
                "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\n"
                "PytorchStreamWriter failed writing file data/0: file write failed"
            )
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", full_disk_on_the_second)
    split = tiny_split(shared_data, tmp_path, 2)
    out = tmp_path / "run"
    args = [str(a) for a in train_args(shared_data, split, out, epochs=2, batch=2)]
    assert main.main([*args, "--eval-every", "0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: {out / 'last.ckpt'}: the checkpoint could not be written (PytorchStreamWriter "
        "failed writing file data/0: file write failed); the previous one is kept"
    )
    kept = torch.load(out / "last.ckpt", weights_only=True)
    assert kept["epoch"] == 1  # the first epoch's checkpoint
    assert not list(out.glob(".*partial*"))
