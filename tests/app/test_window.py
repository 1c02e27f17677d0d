"""The GUI on real clips, offscreen (pytest-qt), and one real window under Xvfb."""

import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
from PyQt5.QtCore import QMimeData, QPoint, QSettings, Qt, QUrl
from PyQt5.QtGui import QDropEvent

from app.window import MainWindow
from engine.video.overlay import class_color

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clip(shared_data):
    return shared_data / "videos" / "vtest.avi"


@pytest.fixture
def make_window(qtbot, tmp_path, detector_onnx):
    windows = []

    def make(source=None, realtime=False, **kw):
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
        settings.setValue("realtime", "true" if realtime else "false")
        settings.setValue("score", 20)
        w = MainWindow(
            str(kw.pop("model", detector_onnx)),
            str(source) if source else None,
            output_dir=tmp_path / "out",
            settings=settings,
            **kw,
        )
        qtbot.addWidget(w)
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()


def wait_frames(qtbot, w, n=5, timeout=30000):
    start = w.view.paints
    qtbot.waitUntil(lambda: w.view.paints >= start + n, timeout=timeout)


def fps_in_status(w, what: str) -> float:
    m = re.search(rf"{what} ([0-9.]+) FPS", w.status.text())
    assert m, w.status.text()
    return float(m.group(1))


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("capture", "video-reader")]


def test_a_clip_plays_with_boxes_and_live_figures(make_window, qtbot, clip):
    w = make_window(clip)
    wait_frames(qtbot, w, 15)
    assert w.error_text == ""
    assert w.backend_label.text() == "onnxruntime on cpu; frames via FFmpeg"
    assert fps_in_status(w, "inference") > 0
    assert fps_in_status(w, "display") > 0
    assert "frame " in w.status.text()
    shown = w.view.dets
    assert len(shown) > 0
    # the first box is painted in its class colour on the view
    img = w.view.grab().toImage()
    arr = np.frombuffer(img.constBits().asstring(img.byteCount()), np.uint8)
    arr = arr.reshape(img.height(), img.bytesPerLine() // 4, 4)[:, : img.width(), :3]  # BGRA
    b, g, r = class_color(int(shown.class_ids[0]))
    close = np.abs(arr.astype(int) - [b, g, r]).sum(-1) < 40
    assert close.sum() > 50
    assert w.seek_slider.isEnabled()


def test_sliders_and_class_filter_change_what_is_drawn(make_window, qtbot, clip):
    w = make_window(clip)
    wait_frames(qtbot, w, 5)
    w.toggle_pause()
    qtbot.wait(300)
    all_dets = w.packet.dets
    assert len(all_dets) > 2
    w.conf_slider.setValue(int(np.median(all_dets.scores) * 100) + 1)
    assert 0 < len(w.view.dets) < len(all_dets)
    w.conf_slider.setValue(w.conf_slider.minimum())
    assert len(w.view.dets) == len(all_dets)
    w.iou_slider.setValue(1)  # the strictest NMS: no two boxes of a class may touch
    strict = w.view.dets
    assert len(strict) <= len(all_dets)
    w.iou_slider.setValue(w.iou_slider.maximum())
    keep = int(all_dets.class_ids[0])
    w._check_all(False)
    assert len(w.view.dets) == 0
    w.class_list.item(keep - 1).setCheckState(Qt.Checked)
    assert set(w.view.dets.class_ids.tolist()) == {keep}
    # remembered for the next start
    assert w.settings.value("classes") == w.class_list.item(keep - 1).text()
    w.close()
    again = make_window(clip)
    wait_frames(qtbot, again, 3)
    checked = [again.class_list.item(i).checkState() == Qt.Checked for i in range(20)]
    assert checked == [i == keep - 1 for i in range(20)]


def test_pause_step_and_seek(make_window, qtbot, clip):
    w = make_window(clip)
    wait_frames(qtbot, w, 3)
    w.toggle_pause()
    qtbot.wait(300)
    at = w.packet.index
    w.step()
    qtbot.waitUntil(lambda: w.packet.index == at + 1, timeout=10000)
    w.worker.seek(500)
    qtbot.waitUntil(lambda: w.packet.index == 500, timeout=10000)
    qtbot.wait(300)
    assert w.packet.index == 500  # still paused


def test_record_and_snapshot(make_window, qtbot, clip):
    w = make_window(clip)
    wait_frames(qtbot, w, 3)
    with qtbot.waitSignal(w.worker.recording, timeout=10000) as started:
        w.record_button.setChecked(True)
        w.toggle_record()
    path = Path(started.args[0])
    wait_frames(qtbot, w, 20)
    with qtbot.waitSignal(w.worker.recording, timeout=10000):
        w.record_button.setChecked(False)
        w.toggle_record()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    assert n >= 15
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (768, 576)
    snap = w.snapshot()
    img = cv2.imread(str(snap))
    assert img.shape == (576, 768, 3)
    assert np.abs(img.astype(int) - w.packet.frame).sum() > 0  # the boxes are on it


def test_switching_source_and_closing_stop_the_workers(make_window, qtbot, clip, shared_data):
    w = make_window(clip)
    wait_frames(qtbot, w, 3)
    first = w.thread
    w.open_source(str(shared_data / "videos" / "car-detection.mp4"))
    assert not first.isRunning()
    wait_frames(qtbot, w, 3)
    assert w.info.width == 768
    assert w.info.height == 432
    w.set_model(w.model_path)  # switching the model restarts on the same source
    wait_frames(qtbot, w, 3)
    thread = w.thread
    w.close()
    assert not thread.isRunning()
    assert not w.running()
    assert our_threads() == []


def test_a_bad_source_shows_an_error_in_the_window(make_window, qtbot, tmp_path):
    w = make_window(tmp_path / "missing.mp4")
    qtbot.waitUntil(lambda: w.error_text != "", timeout=10000)
    assert "not found" in w.error_text
    assert "missing.mp4" in w.error_text  # which source
    assert w.banner_row.isVisible()
    qtbot.waitUntil(lambda: not w.running(), timeout=10000)
    # the thread's finished signal reaches the window through its event loop
    qtbot.waitUntil(lambda: w.start_button.text() == "Start", timeout=5000)
    # a stream that does not answer: the password never reaches the window
    w.open_source("rtsp://admin:hunter2@127.0.0.1:9/cam")
    qtbot.waitUntil(lambda: "cannot open" in w.error_text, timeout=20000)
    assert "hunter2" not in w.error_text
    assert "hunter2" not in w.status.text()


def test_a_bad_model_shows_an_error(make_window, qtbot, clip, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    w = make_window(clip, model=bad)
    qtbot.waitUntil(lambda: w.error_text != "", timeout=10000)
    assert "broken.onnx" in w.error_text


def test_dropping_a_file_opens_it(make_window, qtbot, clip):
    w = make_window(None)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(clip))])
    event = QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    w.dropEvent(event)
    wait_frames(qtbot, w, 3)
    assert w.source_text == str(clip)
    assert w.settings.value("source") == str(clip)


@pytest.fixture
def http_server(shared_data):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data / "videos"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def test_a_stream_runs_live_and_ends_with_a_message(make_window, qtbot, http_server):
    w = make_window(f"http://127.0.0.1:{http_server}/car-detection.mp4")
    wait_frames(qtbot, w, 3)
    assert w.info.live
    assert not w.seek_slider.isEnabled()
    qtbot.waitUntil(lambda: "no more frames" in w.error_text, timeout=60000)
    assert our_threads() == []


def test_memory_stays_flat(make_window, qtbot, shared_data):
    w = make_window(shared_data / "videos" / "one-by-one-person-detection.mp4")

    def rss_mb() -> float:
        return (
            int(Path("/proc/self/statm").read_text().split()[1])
            * os.sysconf("SC_PAGE_SIZE")
            / 2**20
        )

    qtbot.waitUntil(lambda: w.packet is not None and w.packet.index >= 150, timeout=60000)
    before = rss_mb()
    qtbot.waitUntil(lambda: w.packet.index >= 700, timeout=120000)
    assert rss_mb() - before < 40


def test_gui_command_without_a_display_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    r = subprocess.run(
        [sys.executable, "main.py", "gui"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert r.stderr.startswith("error: no display")


XVFB_SCRIPT = """
import sys, time
from PyQt5.QtCore import QSettings
from PyQt5.QtWidgets import QApplication
from app.window import MainWindow
app = QApplication(sys.argv[:1])
assert app.platformName() == "xcb", app.platformName()
s = QSettings(sys.argv[4], QSettings.IniFormat)
s.setValue("score", 20)
w = MainWindow(sys.argv[1], sys.argv[2], output_dir=sys.argv[3], settings=s)
w.show()
t = time.time()
while w.view.paints < 20 and time.time() - t < 60:
    app.processEvents()
    time.sleep(0.01)
shot = app.primaryScreen().grabWindow(0)
shot.save(sys.argv[3] + "/screen.png")
print("shown", len(w.view.dets), "paints", w.view.paints)
w.close()
"""


@pytest.mark.skipif(
    shutil.which("xvfb-run") is None,
    reason="xvfb-run is not installed (bash scripts/install.sh --dev installs it with apt)",
)
def test_a_real_window_under_xvfb(detector_onnx, clip, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    r = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", sys.executable, "-c", XVFB_SCRIPT,
         str(detector_onnx), str(clip), str(tmp_path), str(tmp_path / "s.ini")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    shot = cv2.imread(str(tmp_path / "screen.png"))
    assert shot is not None
    assert shot.shape[:2] == (800, 1280)
    assert shot.std() > 20  # not blank: the video, the boxes and the controls are there
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 1000


def test_the_polish_list_of_the_fault_run(make_window, qtbot, clip, tmp_path):
    """No source: Record and Snapshot say why they do nothing. With a clip: the recording
    shows a red indicator and its time, 'N shown' follows the sliders, the IoU slider does
    not open at its end, every VOC class is listed without scrolling, the seek bar has a
    time, and snapshots with the figures on show them."""
    w = make_window(None)
    w.record_button.setChecked(True)
    w.toggle_record()
    assert not w.record_button.isChecked()
    assert w.statusBar().currentMessage().startswith("nothing to record")
    assert w.snapshot() is None
    assert w.statusBar().currentMessage().startswith("nothing to snapshot")

    w.open_source(str(clip))
    wait_frames(qtbot, w, 5)
    assert w.iou_slider.maximum() == 100
    assert w.iou_slider.value() < w.iou_slider.maximum()  # the model's 0.45, mid-way
    w.iou_slider.setValue(80)
    assert w.iou_label.text() == f"{w.info.model_iou:.2f} (model)"
    visible_rows = w.class_list.minimumHeight() // w.class_list.sizeHintForRow(0)
    assert visible_rows >= 12
    assert re.fullmatch(r"\d+:\d\d / 1:\d\d", w.seek_label.text()), w.seek_label.text()
    w.toggle_pause()
    qtbot.wait(300)
    w.conf_slider.setValue(100)
    assert "| 0 shown" in w.status.text()  # at once, on the paused frame
    w.conf_slider.setValue(w.conf_slider.minimum())
    assert f"| {len(w.packet.dets)} shown" in w.status.text()
    w.toggle_pause()

    w.record_button.setChecked(True)
    w.toggle_record()
    qtbot.waitUntil(lambda: w.rec_label.text().startswith("● REC 0:0"), timeout=10000)
    assert "d01818" in w.record_button.styleSheet()
    w.record_button.setChecked(False)
    w.toggle_record()
    qtbot.waitUntil(lambda: w.rec_label.text() == "", timeout=10000)

    plain = cv2.imread(str(w.snapshot()))
    w.stats_box.setChecked(True)
    with_figures = cv2.imread(str(w.snapshot()))
    band = (slice(0, 20), slice(0, 100))
    assert np.abs(plain[band].astype(int) - with_figures[band]).mean() > 10


def test_a_source_that_fails_leaves_no_opening_message(make_window, qtbot, tmp_path):
    w = make_window(tmp_path / "missing.mp4")
    qtbot.waitUntil(lambda: w.error_text != "", timeout=10000)
    qtbot.waitUntil(lambda: "opening" not in w.status.text(), timeout=5000)
    assert w.status.text().startswith("stopped: ")
