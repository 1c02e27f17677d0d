"""`main.py weights`: downloads from a local HTTP server, resumed, verified and converted."""

import argparse
import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import main
from engine.commands.args import sha256 as parse_sha256
from tests.training.reference_impls import TVSSD300VGG16
from training.download import KNOWN, DownloadError, download, list_text
from training.errors import SSDError
from training.fileio import partial_path
from training.weights import load_detector


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def coco_checkpoint() -> tuple[bytes, dict]:
    """A torchvision ssd300_vgg16 state dict (91 classes) with random weights, saved in FP16
    to keep it small: the importer converts it to FP32 as it would the real one."""
    torch.manual_seed(0)
    state = {k: v.half() for k, v in TVSSD300VGG16(91).state_dict().items()}
    return checkpoint_bytes(state), state


@pytest.fixture(scope="module")
def vgg_checkpoint() -> bytes:
    """A small file with the key names of torchvision's ImageNet VGG16 (what the
    vgg16_imagenet entry checks before it keeps the .pth)."""
    g = torch.Generator().manual_seed(1)
    return checkpoint_bytes(
        {
            "features.0.weight": torch.randn(64, 3, 3, 3, generator=g),
            "features.0.bias": torch.randn(64, generator=g),
            "classifier.6.weight": torch.randn(1000, 64, generator=g),
            "classifier.6.bias": torch.randn(1000, generator=g),
        }
    )


class Handler(BaseHTTPRequestHandler):
    """Serves server.files; honours Range unless server.ranges is False; the first request
    after server.cut_after is set gets only that many bytes of its body."""

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        ask = self.headers.get("Range")
        if ask and srv.ranges:
            start = int(ask[len("bytes=") :].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            body, srv.cut_after = body[: srv.cut_after], None
            self.wfile.write(body)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files, srv.requests, srv.ranges, srv.cut_after = {}, [], True, None
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def weights(*args) -> int:
    return main.main(["weights", *map(str, args)])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: "), err
    return err[-1]


def test_get_downloads_verifies_and_converts(server, coco_checkpoint, tmp_path, capsys):
    data, state = coco_checkpoint
    server.files["/ssd.pth"] = data
    url = f"{server.url}/ssd.pth"
    args = ["get", "ssd300_vgg16_coco", "--dir", tmp_path, "--url", url]
    assert weights(*args, "--sha256", sha256(data)) == 0
    out = capsys.readouterr().out
    pth = tmp_path / "ssd300_vgg16_coco-b556d3b4.pth"
    converted = tmp_path / "ssd300_vgg16_coco.safetensors"
    assert pth.read_bytes() == data
    assert not partial_path(pth).exists()
    assert f"SHA-256 {sha256(data)} (verified)" in out
    assert f"wrote {converted}: SSD300-vgg16, 90 classes, priors torchvision" in out
    assert f"main.py video IN -m {converted}" in out
    assert f"main.py gui -m {converted}" in out

    model = load_detector(converted)
    assert model.spec.num_classes == 91
    assert model.spec.class_names[:2] == ("person", "bicycle")
    assert model.spec.class_names[11] == "N/A"
    assert torch.equal(
        model.state_dict()["head.conf.0.weight"],
        state["head.classification_head.module_list.0.weight"].float(),
    )

    # a second get finds the converted file and downloads nothing
    n = len(server.requests)
    assert weights("get", "ssd300_vgg16_coco", "--dir", tmp_path, "--url", server.url) == 0
    assert "already converted" in capsys.readouterr().out
    assert len(server.requests) == n
    # and the list says where it is
    assert f"converted: {converted}" in list_text(tmp_path)


def test_bad_checksum_deletes_the_download(server, tmp_path, capsys):
    server.files["/ssd.pth"] = b"not the published file" * 100
    url = f"{server.url}/ssd.pth"
    assert weights("get", "ssd300_vgg16_coco", "--dir", tmp_path, "--url", url) == 1
    line = one_line_error(capsys)
    expected = KNOWN["ssd300_vgg16_coco"].sha256
    got = sha256(server.files["/ssd.pth"])
    assert f"SHA-256 mismatch for ssd300_vgg16_coco-b556d3b4.pth from {url}" in line
    assert f"expected {expected}, got {got}" in line
    assert list(tmp_path.iterdir()) == []  # no final file, no .partial, nothing converted


def test_interrupted_download_resumes_with_a_range_request(
    server, vgg_checkpoint, tmp_path, capsys
):
    server.files["/vgg.pth"] = vgg_checkpoint
    server.cut_after = 100_000
    args = ["get", "vgg16_imagenet", "--dir", tmp_path, "--url", f"{server.url}/vgg.pth"]
    args += ["--sha256", sha256(vgg_checkpoint)]
    assert weights(*args) == 1
    line = one_line_error(capsys)
    assert "interrupted after 0.1 MB of 0.3 MB" in line
    assert "run the same command again to resume" in line
    partial = partial_path(tmp_path / "vgg16-397923af.pth")
    assert partial.stat().st_size == 100_000
    assert "partial, 0.1 MB" in list_text(tmp_path)

    assert weights(*args) == 0
    captured = capsys.readouterr()
    assert "resuming after 0.1 MB" in captured.err
    assert server.requests[-1] == ("/vgg.pth", "bytes=100000-")
    final = tmp_path / "vgg16-397923af.pth"
    assert sha256(final.read_bytes()) == sha256(vgg_checkpoint)
    assert not partial.exists()
    assert f"ready: {final}" in captured.out
    assert "--backbone vgg16 --backbone-weights" in captured.out


def test_a_server_without_ranges_restarts_from_zero(server, vgg_checkpoint, tmp_path, capsys):
    server.files["/vgg.pth"] = vgg_checkpoint
    server.ranges = False
    server.cut_after = 50_000
    url = f"{server.url}/vgg.pth"
    dest = tmp_path / "v.pth"
    digest = sha256(vgg_checkpoint)
    with pytest.raises(DownloadError, match="interrupted after 0.1 MB of 0.3 MB"):
        download(url, dest, digest, timeout=5, progress=False)
    assert partial_path(tmp_path / "v.pth").stat().st_size == 50_000
    assert download(url, dest, digest, timeout=5, progress=False) == digest
    assert server.requests[-1] == ("/vgg.pth", "bytes=50000-")  # asked for, answered with 200
    assert "does not resume downloads; starting again" in capsys.readouterr().err
    assert dest.read_bytes() == vgg_checkpoint
    assert not partial_path(tmp_path / "v.pth").exists()


def test_a_complete_partial_file_is_only_verified(server, vgg_checkpoint, tmp_path):
    server.files["/vgg.pth"] = vgg_checkpoint
    partial_path(tmp_path / "v.pth").write_bytes(vgg_checkpoint)
    digest = sha256(vgg_checkpoint)
    assert download(f"{server.url}/vgg.pth", tmp_path / "v.pth", digest, progress=False) == digest
    assert server.requests == [("/vgg.pth", f"bytes={len(vgg_checkpoint)}-")]  # answered 416
    assert (tmp_path / "v.pth").read_bytes() == vgg_checkpoint


def test_a_known_prefix_is_verified_and_said_to_be_one(server, vgg_checkpoint, tmp_path, capsys):
    server.files["/vgg.pth"] = vgg_checkpoint
    prefix = sha256(vgg_checkpoint)[:8]
    args = ["get", "vgg16_imagenet", "--dir", tmp_path, "--url", f"{server.url}/vgg.pth"]
    assert weights(*args, "--sha256", prefix.upper()) == 0
    assert f"verified: only the prefix {prefix} is known" in capsys.readouterr().out
    # not a VGG16 checkpoint: refused although its (given) checksum matches
    other = checkpoint_bytes({"fc.weight": torch.zeros(2, 2)})
    server.files["/vgg.pth"] = other
    assert weights(*args, "--sha256", sha256(other), "--force") == 1
    assert "not a torchvision-vgg16 checkpoint" in one_line_error(capsys)


def test_http_errors_are_one_line(server, tmp_path, capsys):
    url = f"{server.url}/missing.pth"
    assert weights("get", "ssd300_vgg16_voc", "--dir", tmp_path, "--url", url) == 1
    assert one_line_error(capsys) == f"error: cannot download {url}: HTTP 404 Not Found"
    assert weights("get", "ssd300_vgg16_voc", "--dir", tmp_path, "--url", "ftp://x/y.pth") == 1
    assert one_line_error(capsys) == "error: not an http(s) URL: ftp://x/y.pth"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_and_timeout_are_one_line(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/ssd.pth"
    assert weights("get", "ssd300_vgg16_coco", "--dir", tmp_path, "--url", url) == 1
    assert one_line_error(capsys) == f"error: cannot download {url}: Connection refused"
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ssd.pth"
        args = ["get", "ssd300_vgg16_coco", "--dir", tmp_path, "--url", url, "--timeout", "0.2"]
        assert weights(*args) == 1
    line = one_line_error(capsys)
    assert line == f"error: cannot download {url}: timed out (no answer within 0.2 s)"
    assert list(tmp_path.iterdir()) == []


def test_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSD300_CACHE", str(tmp_path))
    tmp_path = tmp_path / "weights"  # $SSD300_CACHE/weights
    tmp_path.mkdir()
    (tmp_path / "ssd300_mAP_77.43_v2.pth").write_bytes(b"x")
    assert weights() == 0
    out = capsys.readouterr().out
    assert weights("list") == 0
    assert capsys.readouterr().out == out
    assert f"cache folder: {tmp_path}" in out
    for entry in KNOWN.values():
        assert entry.name in out
        assert entry.url in out
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].strip()}
    assert rows["ssd300_vgg16_coco"].split()[1:5] == ["~143", "MB", "full", "not"]
    assert "none!" in rows["ssd300_vgg16_voc"]
    assert f"downloaded: {tmp_path / 'ssd300_mAP_77.43_v2.pth'}" in rows["ssd300_vgg16_voc"]
    assert "no SHA-256 of ssd300_vgg16_voc is published" in out
    assert "--backbone vgg16 --backbone-weights FILE" in out


def test_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main.main(["weights", "get", "--help"])
    assert e.value.code == 0
    assert "--sha256 HEX" in capsys.readouterr().out
    for bad in (["get", "yolo"], ["get", "vgg16_imagenet", "--sha256", "abc"]):
        with pytest.raises(SystemExit) as e:
            weights(*bad)
        assert e.value.code == 2


def test_the_parser_lists_the_known_checkpoints():
    from engine.commands.model import WEIGHTS_NAMES

    assert list(KNOWN) == WEIGHTS_NAMES


def test_sha256_parsing():
    assert parse_sha256(" B556D3B4 ") == "b556d3b4"
    for bad in ("b556d3b", "g" * 64, "0" * 65):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a SHA-256"):
            parse_sha256(bad)
    for entry in KNOWN.values():  # full digests begin with the prefix in the file name
        if entry.sha256 and "-" in entry.filename:
            assert entry.sha256.startswith(entry.filename.rsplit("-", 1)[1].split(".")[0])
    assert issubclass(DownloadError, SSDError)


def test_the_engine_finds_downloads_where_the_download_puts_them(tmp_path, monkeypatch):
    """engine.runtime.models.weights_cache and download.cache_dir are one rule (training.fileio)."""
    from engine.runtime.models import weights_cache
    from training.download import cache_dir

    for value in (str(tmp_path), "~/ssd300-cache"):
        monkeypatch.setenv("SSD300_CACHE", value)
        assert weights_cache() == cache_dir()
    monkeypatch.delenv("SSD300_CACHE")
    assert weights_cache() == cache_dir()
