"""GStreamer pipeline strings for OpenCV (`cv2.VideoCapture(p, cv2.CAP_GSTREAMER)` and
`cv2.VideoWriter(p, cv2.CAP_GSTREAMER, ...)`), per source kind and machine.

On a Jetson (`hardware=True`) decoding runs on NVDEC (`nvv4l2decoder`), scaling and colour
conversion on the VIC (`nvvidconv`, to BGRx; only BGRx -> BGR is left to the CPU), CSI
cameras come through Argus (`nvarguscamerasrc`) and recording uses NVENC (`nvv4l2h264enc`).
Elsewhere the capture pipelines use GStreamer's software decoders. Live sources end in an
appsink that keeps only the newest frame (`drop=true max-buffers=1 sync=false`); files end
in one that keeps every frame (the decoder waits for the reader).

Pure functions of their arguments: tested as strings, no GStreamer needed. Python 3.8.
"""

from __future__ import annotations

APPSINK_LIVE = "appsink drop=true max-buffers=1 sync=false"
APPSINK_FILE = "appsink max-buffers=4 sync=false"

# Container (by file extension) -> demuxer; codec -> (parser, RTP depayloader, software decoder).
DEMUXERS = {
    ".mp4": "qtdemux",
    ".m4v": "qtdemux",
    ".mov": "qtdemux",
    ".3gp": "qtdemux",
    ".mkv": "matroskademux",
    ".webm": "matroskademux",
    ".avi": "avidemux",
    ".ts": "tsdemux",
    ".mts": "tsdemux",
    ".m2ts": "tsdemux",
}
CODECS = {
    "h264": ("h264parse", "rtph264depay", "avdec_h264"),
    "h265": ("h265parse", "rtph265depay", "avdec_h265"),
}


def quote(value: str) -> str:
    """A property value for gst-launch syntax: double-quoted, with \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_bgr(hardware: bool) -> str:
    """Decoded frames (NVMM or system memory) to the BGR that OpenCV hands out."""
    if hardware:
        return "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR"
    return "videoconvert ! video/x-raw,format=BGR"


def _caps(kind: str, width: int = 0, height: int = 0, fps: int = 0) -> str:
    fields = [kind]
    if width and height:
        fields += [f"width={width}", f"height={height}"]
    if fps:
        fields.append(f"framerate={fps}/1")
    return ",".join(fields)


def csi_pipeline(
    sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30, flip: int = 0
) -> str:
    """A Jetson CSI camera through Argus. The ISP delivers `width`x`height` (it picks the
    sensor mode and scales), the VIC converts to BGRx and applies `flip` (nvvidconv
    flip-method: 0 none, 2 rotate 180, 4 horizontal, 6 vertical)."""
    nvmm = _caps("video/x-raw(memory:NVMM)", width, height, fps) + ",format=NV12"
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! {nvmm} ! nvvidconv flip-method={flip} ! "
        "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! " + APPSINK_LIVE
    )


def v4l2_pipeline(
    device: str,
    width: int = 0,
    height: int = 0,
    fps: int = 0,
    fmt: str = "",
    hardware: bool = False,
) -> str:
    """A USB (UVC) camera. fmt 'mjpg' asks for Motion JPEG (what UVC cameras send at high
    resolutions), decoded by nvv4l2decoder on a Jetson and jpegdec elsewhere; otherwise raw
    frames. Without a size the camera's default mode is used."""
    src = f"v4l2src device={quote(device)}"
    if fmt.lower() in ("mjpg", "mjpeg", "jpeg"):
        caps = _caps("image/jpeg", width, height, fps)
        if hardware:
            decode = "nvv4l2decoder mjpeg=1 ! " + to_bgr(True)
        else:
            decode = "jpegdec ! " + to_bgr(False)
        return f"{src} ! {caps} ! {decode} ! {APPSINK_LIVE}"
    caps = _caps("video/x-raw", width, height, fps)
    middle = f" ! {caps}" if caps != "video/x-raw" else ""
    return f"{src}{middle} ! {to_bgr(False)} ! {APPSINK_LIVE}"


def _decoder(codec: str, hardware: bool) -> str:
    return "nvv4l2decoder" if hardware else CODECS[codec][2]


def file_pipeline(path: str, suffix: str, codec: str | None, hardware: bool) -> str | None:
    """A video file decoded by GStreamer, every frame kept; None where this module has no
    pipeline for the container or codec (the caller then uses OpenCV's FFmpeg)."""
    demux = DEMUXERS.get(suffix.lower())
    if demux is None or codec not in CODECS:
        return None
    parse = CODECS[codec][0]
    return (
        f"filesrc location={quote(path)} ! {demux} ! {parse} ! {_decoder(codec, hardware)} ! "
        f"{to_bgr(hardware)} ! {APPSINK_FILE}"
    )


def rtsp_pipeline(url: str, codec: str | None, hardware: bool, latency_ms: int = 200) -> str:
    """An RTSP stream with a small jitter buffer (`latency`); H.264/H.265 go through their
    depayloader, parser and the (hardware) decoder; another or an unknown codec through
    decodebin."""
    src = f"rtspsrc location={quote(url)} latency={latency_ms}"
    if codec in CODECS:
        parse, depay, _ = CODECS[codec]
        decode = f"{depay} ! {parse} ! {_decoder(codec, hardware)}"
    else:
        decode = "decodebin"
    return f"{src} ! {decode} ! {to_bgr(hardware)} ! {APPSINK_LIVE}"


def h264_bitrate(width: int, height: int, fps: float) -> int:
    """Bits per second for recordings: 0.1 bit per pixel per frame, at least 1 Mbit/s
    (about 6 Mbit/s for 1080p at 30 fps)."""
    return max(1_000_000, int(width * height * max(fps, 1.0) * 0.1))


def encoder_pipeline(path: str, width: int, height: int, fps: float) -> str:
    """What OpenCV's VideoWriter feeds BGR frames into (it supplies appsrc's caps): H.264 in
    MP4 encoded by a Jetson's NVENC; the VIC converts BGRx to NV12."""
    bitrate = h264_bitrate(width, height, fps)
    return (
        "appsrc ! videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! "
        f"video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc bitrate={bitrate} "
        f"insert-sps-pps=true ! h264parse ! qtmux faststart=true ! filesink location={quote(path)}"
    )
