"""The main window: video view, source and model choice, detection controls, playback,
recording, snapshots and a live status line. The GUI thread only paints and handles
controls; DetectionWorker does the rest on its QThread.

Over 400 lines on purpose: one QMainWindow; its widgets, slots and settings share the
window's state (painting is app.view, the work app.worker).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
from PyQt5.QtCore import QSettings, Qt, QThread, QTimer
from PyQt5.QtWidgets import (
    QAction,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.view import VideoView
from app.worker import DetectionWorker, Packet, SourceInfo, source_from_text
from engine.runtime.detector import BACKENDS, Detections, EngineError
from engine.video.filters import DetectionFilter
from engine.video.overlay import draw_detections, draw_lines
from engine.video.sources import VIDEO_EXTENSIONS, mask_credentials

MODEL_FILTER = "Models (*.onnx *.engine *.plan *.safetensors);;All files (*)"
VIDEO_FILTER = "Videos (" + " ".join(f"*{e}" for e in sorted(VIDEO_EXTENSIONS)) + ");;All (*)"


def list_cameras(root: str = "/") -> list[tuple[str, str]]:
    """(source spec, name) of the cameras: V4L2 devices (/dev/video*, names from sysfs) by
    index; a Jetson's CSI sensors (sysfs name "vi-output, ...") as csi://N, N counting them
    in device order, since they need Argus (nvarguscamerasrc) for their ISP."""
    found = []
    csi = 0
    base = Path(root)
    nodes = sorted(
        (int(m.group(1)), p.name)
        for p in (base / "dev").glob("video*")
        for m in [re.fullmatch(r"video(\d+)", p.name)]
        if m
    )
    for n, node in nodes:
        name_file = base / "sys" / "class" / "video4linux" / node / "name"
        name = name_file.read_text().strip() if name_file.is_file() else f"camera {n}"
        if name.startswith("vi-output"):
            found.append((f"csi://{csi}", f"CSI {name.split(',', 1)[-1].strip()}"))
            csi += 1
        else:
            found.append((str(n), name))
    return found


def _shipped_model() -> str:
    """The shipped default model, or "" in a checkout without it."""
    from engine.runtime.models import default_model

    try:
        return str(default_model())
    except EngineError:
        return ""


# Workers that outlived stop()'s wait, kept referenced until their thread ends.
_RETIRING: list[tuple[DetectionWorker, QThread]] = []


def _clock(seconds: float) -> str:
    """'1:05' or '1:02:03'."""
    s = int(max(0.0, seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _retire(pair) -> None:
    if pair in _RETIRING:
        _RETIRING.remove(pair)


class MainWindow(QMainWindow):
    """`settings`: where the last source and settings are remembered (default: the user's
    QSettings for this application). `output_dir`: where recordings and snapshots go."""

    def __init__(
        self,
        model: str | None = None,
        source: str | None = None,
        backend: str | None = None,
        output_dir: Path = Path("runs/gui"),
        settings: QSettings | None = None,
        autostart: bool = True,
    ) -> None:
        super().__init__()
        self.setWindowTitle("SSD300 live detection")
        self.settings = settings or QSettings("ssd300", "gui")
        self.output_dir = Path(output_dir)
        self.thread: QThread | None = None
        self.worker: DetectionWorker | None = None
        self.info: SourceInfo | None = None
        self.packet: Packet | None = None
        self.error_text = ""
        self.recording_path = ""
        self._display_times: list[float] = []
        self._class_ids: list[int] | None = None

        self.view = VideoView()
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#7a1f1f;color:white;padding:6px;")
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self.start)
        banner_row = QWidget()
        row = QHBoxLayout(banner_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.banner, 1)
        row.addWidget(self.retry_button)
        self.banner_row = banner_row
        banner_row.hide()
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(banner_row)
        col.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self.status = QLabel("no source")
        self.statusBar().addWidget(self.status, 1)
        self.rec_label = QLabel("")  # "● REC 0:12" while recording
        self.rec_label.setStyleSheet("color:#d01818;font-weight:bold;")
        self.statusBar().addPermanentWidget(self.rec_label)
        self._rec_started = 0.0
        self._rec_timer = QTimer(self)
        self._rec_timer.setInterval(500)
        self._rec_timer.timeout.connect(self._show_recording_time)
        self._build_controls()
        self._build_shortcuts()
        self.setAcceptDrops(True)
        self.resize(1200, 720)

        # Read every remembered value before setting any: setting a control saves them all.
        st = self.settings
        remembered = {
            "score": int(st.value("score", 30)),
            "iou": int(st.value("iou", 45)),
            "realtime": st.value("realtime", "true") == "true",
            "stats": st.value("stats_overlay", "false") == "true",
            "backend": st.value("backend", "auto", str),
        }
        self._wanted_classes = st.value("classes", "", str)
        self.model_path = model or st.value("model", "", str) or _shipped_model()
        self.source_text = source or st.value("source", "", str)
        self.backend_box.setCurrentText(backend or remembered["backend"])
        self.model_label.setText(self.model_path or "(none)")
        self.url_edit.setText(self.source_text if "://" in self.source_text else "")
        self.conf_slider.setValue(remembered["score"])
        self.iou_slider.setValue(remembered["iou"])
        self.conf_label.setText(f"{self.conf_slider.value() / 100:.2f}")
        self.iou_label.setText(f"{self.iou_slider.value() / 100:.2f}")
        self.realtime_box.setChecked(remembered["realtime"])
        self.stats_box.setChecked(remembered["stats"])
        if autostart and self.model_path and self.source_text:
            QTimer.singleShot(0, self.start)
        elif not self.model_path:
            self.show_error("Choose a model (an .onnx, engine or .safetensors file) to start.")

    # -- building ---------------------------------------------------------------------------

    def _build_controls(self) -> None:
        panel = QWidget()
        layout = QVBoxLayout(panel)

        src = QGroupBox("Source")
        f = QFormLayout(src)
        self.camera_box = QComboBox()
        for spec, name in list_cameras() or [("0", "camera 0 (none found)")]:
            self.camera_box.addItem(f"{spec}: {name}", spec)
        cam_button = QPushButton("Open camera")
        cam_button.clicked.connect(
            lambda: self.open_source(str(self.camera_box.currentData() or "0"))
        )
        f.addRow(self.camera_box, cam_button)
        file_button = QPushButton("Open file…")
        file_button.clicked.connect(self._choose_file)
        f.addRow(file_button)
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText(
            "rtsp://…, csi://0, v4l2:///dev/video0, a GStreamer pipeline"
        )
        url_button = QPushButton("Open URL")
        url_button.clicked.connect(lambda: self.open_source(self.url_edit.text()))
        self.url_edit.returnPressed.connect(url_button.click)
        f.addRow(self.url_edit, url_button)
        layout.addWidget(src)

        mod = QGroupBox("Model")
        f = QFormLayout(mod)
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        model_button = QPushButton("Choose model…")
        model_button.clicked.connect(self._choose_model)
        f.addRow(self.model_label)
        f.addRow(model_button)
        self.backend_box = QComboBox()
        self.backend_box.addItems(["auto", *BACKENDS])
        self.backend_box.activated.connect(lambda _: self.start())
        f.addRow("Backend", self.backend_box)
        self.backend_label = QLabel("-")
        f.addRow("Running", self.backend_label)
        layout.addWidget(mod)

        det = QGroupBox("Detection")
        f = QFormLayout(det)
        self.conf_slider, self.conf_label = self._slider(f, "Confidence")
        self.iou_slider, self.iou_label = self._slider(f, "NMS IoU")
        self.class_list = QListWidget()
        self.class_list.itemChanged.connect(lambda _: self._filters_changed())
        f.addRow(self.class_list)
        all_button, none_button = QPushButton("All classes"), QPushButton("None")
        all_button.clicked.connect(lambda: self._check_all(True))
        none_button.clicked.connect(lambda: self._check_all(False))
        f.addRow(all_button, none_button)
        layout.addWidget(det)

        play = QGroupBox("Playback")
        f = QFormLayout(play)
        self.start_button = QPushButton("Stop")
        self.start_button.clicked.connect(self._start_stop)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.step_button = QPushButton("Step")
        self.step_button.clicked.connect(self.step)
        f.addRow(self.start_button, self.pause_button)
        f.addRow(self.step_button)
        self.seek_slider = QSlider(Qt.Horizontal)
        self.seek_slider.setEnabled(False)
        self.seek_slider.sliderReleased.connect(self._seek_to_slider)
        # clicks on the groove and keys (the packets' updates block the slider's signals)
        self.seek_slider.valueChanged.connect(
            lambda _: None if self.seek_slider.isSliderDown() else self._seek_to_slider()
        )
        self.seek_label = QLabel("-")  # position / length of a file
        seek_row = QWidget()
        h = QHBoxLayout(seek_row)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(self.seek_slider, 1)
        h.addWidget(self.seek_label)
        f.addRow("Seek", seek_row)
        self.realtime_box = QCheckBox("Files at their own frame rate")
        self.realtime_box.setToolTip(
            "Play files in real time: when the model is slower than the file, the frames it "
            "cannot keep up with are skipped (counted in 'dropped'). Untick to process every "
            "frame, slower than real time."
        )
        self.realtime_box.toggled.connect(self._realtime_changed)
        f.addRow(self.realtime_box)
        self.record_button = QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.clicked.connect(self.toggle_record)
        snap_button = QPushButton("Snapshot")
        snap_button.clicked.connect(self.snapshot)
        f.addRow(self.record_button, snap_button)
        self.stats_box = QCheckBox("Figures on the video")
        self.stats_box.toggled.connect(self._stats_toggled)
        f.addRow(self.stats_box)
        layout.addWidget(play)
        layout.addStretch(1)

        dock = QDockWidget("Controls")
        dock.setObjectName("controls")
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        dock.setWidget(panel)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)
        self.controls = dock

    def _slider(self, form: QFormLayout, name: str) -> tuple[QSlider, QLabel]:
        slider = QSlider(Qt.Horizontal)
        slider.setRange(1, 100)
        label = QLabel("-")
        label.setMinimumWidth(36)

        def changed(v: int) -> None:
            label.setText(self._slider_text(slider, v))
            self._filters_changed()

        slider.valueChanged.connect(changed)
        row = QWidget()
        h = QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(slider, 1)
        h.addWidget(label)
        form.addRow(name, row)
        return slider, label

    def _slider_text(self, slider: QSlider, v: int) -> str:
        """The value; for the IoU above the model's own, the model's (it cannot be undone)."""
        info = self.info
        iou = slider is getattr(self, "iou_slider", None)
        if iou and info is not None and v / 100 > info.model_iou + 1e-9:
            return f"{info.model_iou:.2f} (model)"
        return f"{v / 100:.2f}"

    def _build_shortcuts(self) -> None:
        for key, slot in (
            ("Space", self.toggle_pause),
            ("S", self.snapshot),
            ("R", lambda: (self.record_button.toggle(), self.toggle_record())),
            ("F", self.toggle_fullscreen),
            ("Q", self.close),
        ):
            action = QAction(self)
            action.setShortcut(key)
            action.setShortcutContext(Qt.ApplicationShortcut)
            action.triggered.connect(slot)
            self.addAction(action)

    # -- sources and models ---------------------------------------------------------------

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video", "", VIDEO_FILTER)
        if path:
            self.open_source(path)

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model", "", MODEL_FILTER)
        if path:
            self.set_model(path)

    def set_model(self, path: str) -> None:
        self.model_path = path
        self.model_label.setText(path)
        self.settings.setValue("model", path)
        if self.source_text:
            self.start()

    def open_source(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self.source_text = text
        self.settings.setValue("source", text)
        self.start()

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not files:
            return
        event.acceptProposedAction()
        if Path(files[0]).suffix in (".onnx", ".engine", ".plan", ".safetensors"):
            self.set_model(files[0])
        else:
            self.open_source(files[0])

    # -- the worker -------------------------------------------------------------------------

    def start(self) -> None:
        """(Re)starts the worker on the current model and source."""
        self.stop()
        self.hide_error()
        if not self.model_path:
            self.show_error("Choose a model (an .onnx, engine or .safetensors file) first.")
            return
        if not self.source_text:
            self.show_error("Open a camera, a file or a URL.")
            return
        self.settings.setValue("backend", self.backend_box.currentText())
        self.info = self.packet = None
        self._display_times = []
        self.pause_button.setText("Pause")
        try:
            source = source_from_text(self.source_text)
        except EngineError as e:  # a malformed camera URI
            self.show_error(mask_credentials(str(e)))
            return
        worker = DetectionWorker(
            self.model_path,
            source,
            backend=self.backend_box.currentText(),
            realtime=self.realtime_box.isChecked(),
        )
        thread = QThread(self)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.opened.connect(self._on_opened)
        worker.frameAvailable.connect(self._on_frame)
        worker.failed.connect(self._on_failed)
        worker.message.connect(self._on_message)
        worker.recording.connect(self._on_recording)
        worker.finished.connect(thread.quit)
        thread.finished.connect(lambda t=thread: self._on_thread_finished(t))
        self.worker, self.thread = worker, thread
        self._push_filters()
        self.status.setText(f"opening {source.display} …")
        self.start_button.setText("Stop")
        thread.start()

    def stop(self, wait_s: float = 3.0) -> None:
        """Stops the worker and waits up to `wait_s` for its thread (a frame in flight
        finishes first). One that takes longer (a stream still opening, an engine being
        built) is kept until it ends on its own, without blocking the window."""
        worker, thread = self.worker, self.thread
        self.worker = self.thread = None
        if worker is not None:
            worker.stop()
            # Its frames and errors no longer concern the window; its messages (recording
            # saved) still go to the status bar.
            for signal in (worker.frameAvailable, worker.failed, worker.opened):
                signal.disconnect()
        if thread is not None:
            thread.quit()
            if not thread.wait(int(wait_s * 1000)):
                _RETIRING.append((worker, thread))
                thread.setParent(None)
                thread.finished.connect(lambda p=(worker, thread): _retire(p))
        self.record_button.setChecked(False)
        self.start_button.setText("Start")

    def _seek_to_slider(self) -> None:
        if self.worker is not None:
            self.worker.seek(self.seek_slider.value())

    def _on_thread_finished(self, thread: QThread) -> None:
        if thread is self.thread:  # the worker ended by itself (an error, a lost camera)
            self.start_button.setText("Start")
            self.record_button.setChecked(False)

    def running(self) -> bool:
        return self.thread is not None and self.thread.isRunning()

    def _start_stop(self) -> None:
        if self.running():
            self.stop()
            self.status.setText("stopped")
        else:
            self.start()

    def _on_opened(self, info: SourceInfo) -> None:
        self.info = info
        self.backend_label.setText(
            info.backend + (f"; frames via {info.capture}" if info.capture else "")
        )
        floor = max(1, int(round(info.score_floor * 100)))
        self.conf_slider.setMinimum(floor)
        self.iou_slider.setToolTip(
            f"the model does NMS at {info.model_iou:g}; lower values suppress more, higher "
            "ones change nothing"
        )
        self.iou_label.setText(self._slider_text(self.iou_slider, self.iou_slider.value()))
        self.conf_slider.setToolTip(f"the model keeps scores >= {info.score_floor:g}")
        self._fill_classes(info.class_names)
        self.seek_slider.setEnabled(not info.live and info.frame_count > 0)
        self.seek_label.setText("-")
        self.seek_slider.setRange(0, max(0, info.frame_count - 1))
        self.pause_button.setEnabled(True)
        self.step_button.setEnabled(not info.live)
        self._push_filters()

    def _fill_classes(self, names: list[str]) -> None:
        wanted = self._wanted_classes
        keep = set(wanted.split(",")) if wanted else None
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name in names:
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked if keep is None or name in keep else Qt.Unchecked)
            self.class_list.addItem(item)
        self.class_list.blockSignals(False)
        rows = min(len(names), 12)  # every class of a VOC model shows without scrolling... most
        row_h = self.class_list.sizeHintForRow(0) if names else 18
        self.class_list.setMinimumHeight(rows * row_h + 2 * self.class_list.frameWidth())
        self._filters_changed()

    def _on_frame(self) -> None:
        worker = self.worker
        packet = worker.take() if worker is not None else None
        if packet is None:
            return
        self.packet = packet
        self.view.set_frame(packet.frame, self.shown_detections())
        now = time.perf_counter()
        self._display_times = [t for t in self._display_times if now - t < 1.0] + [now]
        s = packet.stats
        if "total" in s and s["total"] and not self.seek_slider.isSliderDown():
            self.seek_slider.blockSignals(True)
            self.seek_slider.setValue(s["position"])
            self.seek_slider.blockSignals(False)
        self._update_status()

    def figures(self) -> list[str]:
        """The live figures, one item each (the status bar joins them; the overlay, the
        snapshots and the recordings show them as lines)."""
        if self.packet is None:
            return []
        s = self.packet.stats
        lines = [
            f"capture {s.get('capture_fps', 0):.1f} FPS",
            f"inference {s.get('inference_fps', 0):.1f} FPS, {s.get('latency_ms', 0):.1f} ms",
            f"display {self.display_fps():.1f} FPS",
            f"dropped {s.get('dropped', 0)}",
            f"{len(self.view.dets)} shown",
        ]
        if s.get("total"):
            lines.append(f"frame {s['position'] + 1}/{s['total']}")
        return lines

    def _update_status(self) -> None:
        lines = self.figures()
        self.status.setText(" | ".join(lines))
        self.view.stats_lines = lines
        if self.worker is not None:  # recordings show the figures too when the overlay does
            self.worker.recorder.caption = lines if self.stats_box.isChecked() else None
        s = self.packet.stats if self.packet is not None else {}
        fps = self.info.fps if self.info is not None else 0
        if s.get("total") and fps > 0:
            self.seek_label.setText(f"{_clock(s['position'] / fps)} / {_clock(s['total'] / fps)}")

    def display_fps(self) -> float:
        t = self._display_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def _on_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 10000)

    def _on_recording(self, path: str) -> None:
        self.recording_path = path
        self.record_button.setChecked(bool(path))
        self.record_button.setStyleSheet("background:#d01818;color:white;" if path else "")
        if path:
            self._rec_started = time.monotonic()
            self._rec_timer.start()
        else:
            self._rec_timer.stop()
        self._show_recording_time()

    def _show_recording_time(self) -> None:
        if self.recording_path:
            secs = time.monotonic() - self._rec_started
            self.rec_label.setText(f"● REC {_clock(secs)}")
            self.rec_label.setToolTip(self.recording_path)
        else:
            self.rec_label.setText("")

    def _on_failed(self, text: str) -> None:
        self.show_error(text)
        self.status.setText("stopped: " + mask_credentials(text).split(": ")[0])

    def show_error(self, text: str) -> None:
        self.error_text = mask_credentials(text)
        self.banner.setText(self.error_text)
        self.banner_row.show()

    def hide_error(self) -> None:
        self.error_text = ""
        self.banner_row.hide()

    # -- filters ------------------------------------------------------------------------------

    def _check_all(self, on: bool) -> None:
        for i in range(self.class_list.count()):
            self.class_list.item(i).setCheckState(Qt.Checked if on else Qt.Unchecked)

    def current_filters(self) -> DetectionFilter:
        """The sliders and the class list, as the view and the worker's recorder apply them."""
        return DetectionFilter(
            score=self.conf_slider.value() / 100,
            iou=self.iou_slider.value() / 100,
            classes=None if self._class_ids is None else tuple(self._class_ids),
            model_iou=self.info.model_iou if self.info else 1.0,
        )

    def shown_detections(self) -> Detections:
        if self.packet is None:
            return Detections.empty()
        return self.current_filters().apply(self.packet.dets)

    def _filters_changed(self) -> None:
        n = self.class_list.count()
        checked = [i + 1 for i in range(n) if self.class_list.item(i).checkState() == Qt.Checked]
        self._class_ids = None if len(checked) == n else checked
        if n:  # before a model has filled the list there is nothing to remember
            names = [self.class_list.item(i - 1).text() for i in checked]
            self._wanted_classes = "" if self._class_ids is None else ",".join(names)
            self.settings.setValue("classes", self._wanted_classes)
        self.settings.setValue("score", self.conf_slider.value())
        self.settings.setValue("iou", self.iou_slider.value())
        self._push_filters()
        if self.packet is not None:
            self.view.set_detections(self.shown_detections())
            self._update_status()  # "N shown" follows the sliders

    def _push_filters(self) -> None:
        if self.worker is not None:
            self.worker.filters = self.current_filters()

    # -- playback, recording, snapshots ---------------------------------------------------------

    def toggle_pause(self) -> None:
        if self.worker is None:
            return
        paused = not self.worker.paused
        self.worker.set_paused(paused)
        self.pause_button.setText("Play" if paused else "Pause")

    def step(self) -> None:
        if self.worker is not None and self.info is not None and not self.info.live:
            if not self.worker.paused:
                self.toggle_pause()
            self.worker.step()

    def _realtime_changed(self, on: bool) -> None:
        self.settings.setValue("realtime", "true" if on else "false")
        if self.worker is not None:
            self.worker.realtime = on

    def _stats_toggled(self, on: bool) -> None:
        self.settings.setValue("stats_overlay", "true" if on else "false")
        self.view.show_stats = on
        self.view.update()

    def _stamp(self) -> str:
        return time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"

    def toggle_record(self) -> None:
        if self.worker is None:  # no source (or it stopped)
            self.record_button.setChecked(False)
            self.statusBar().showMessage("nothing to record: open a camera, a file or a URL", 5000)
            return
        if self.record_button.isChecked():
            self.worker.start_recording(self.output_dir / f"record-{self._stamp()}.mp4")
        else:
            self.worker.stop_recording()

    def snapshot(self) -> Path | None:
        """Saves the current frame with the boxes shown, at the frame's resolution."""
        if self.packet is None:
            self.statusBar().showMessage(
                "nothing to snapshot: open a camera, a file or a URL", 5000
            )
            return None
        path = self.output_dir / f"snapshot-{self._stamp()}.png"
        image = draw_detections(self.packet.frame.copy(), self.shown_detections())
        if self.stats_box.isChecked():  # as shown: the figures too
            draw_lines(image, self.figures())
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ok = cv2.imwrite(str(path), image)
        except (OSError, cv2.error) as e:
            ok, path = False, f"{path} ({e})"
        if not ok:
            self.show_error(f"could not write the snapshot {path}")
            return None
        self.statusBar().showMessage(f"snapshot saved: {path}", 10000)
        return path

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.showNormal()
            self.controls.show()
        else:
            self.controls.hide()
            self.showFullScreen()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.stop(wait_s=30.0)
        for _, thread in list(_RETIRING):
            thread.wait(30000)
        self.settings.sync()
        super().closeEvent(event)
