"""TensorRT: FP16 and INT8 engine builds (8.5, 8.6, 10.x, 11.x) with a per-device cache, and
a runtime on cuda-python memory.

TensorRT and cuda-python are imported lazily and only here. The version-dependent choices
are small pure functions (`build_settings`, `engine_cache_name`) so they are tested without
a GPU. What has run on real TensorRT is stated in the README.

API used (TensorRT >= 8.5 name-based I/O): Builder / create_network / OnnxParser /
create_builder_config / set_memory_pool_limit / set_flag / build_serialized_network;
Runtime.deserialize_cuda_engine, create_execution_context, num_io_tensors,
get_tensor_name/shape/dtype/mode, set_tensor_address, execute_async_v3.

Over 400 lines on purpose: the build, the engine cache and the runtime share the
version-dependent choices and must change together when TensorRT changes.
"""

from __future__ import annotations

import ctypes
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import training.fileio as fileio
from engine.runtime import contract as C
from engine.runtime.detector import Detector, EngineError, ModelInfo, read_onnx_info
from training.fileio import atomic_write_bytes, sha256_file

# TensorRT's DLA runs FP16 and INT8 layers only ("DLA supports ... FP16 and INT8", TensorRT
# developer guide, "Working with DLA"): an FP32 DLA build has nothing to run there.
DLA_FP32 = "--dla needs --precision fp16: the DLA runs FP16 or INT8, never FP32"
# The build sidecar's fields that decide whether a cached engine fits: the ONNX's content,
# the precision, the TensorRT version, the GPU model and its SM, the DLA core. Never the
# ONNX's path: one file reached by two paths is one engine.
CACHE_KEY = ("onnx_sha256", "precision", "tensorrt", "gpu", "sm", "dla_core", "calibration")


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(
            "TensorRT is not installed: on a desktop GPU install NVIDIA's tensorrt wheel, on a "
            "Jetson use JetPack's python3-libnvinfer; or run the ONNX with --backend onnxruntime"
        ) from None
    return trt


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:  # cuda-python 11.8 / 12.x before the cuda.bindings layout (JetPack 5)
            from cuda import cudart
        except ImportError:
            raise EngineError(
                "cuda-python is not installed (pip install cuda-python; on JetPack 6 "
                "'cuda-python>=12.6,<13')"
            ) from None
    return cudart


def trt_major(version: str) -> int:
    m = re.match(r"(\d+)\.", version)
    if not m:
        raise EngineError(f"unrecognized TensorRT version {version!r}")
    return int(m.group(1))


@dataclass(frozen=True)
class BuildSettings:
    """What to ask the builder for, given the TensorRT version and the ONNX's precision."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...]  # BuilderFlag names
    pin_fp32: bool  # keep the l2norm/, fp32/ and nms/ float layers in FP32 (weak typing)
    strongly_typed: bool = False  # precision comes from the ONNX's types


NO_CALIBRATORS = (
    "TensorRT {v} removed INT8 calibration (strong typing only): export an INT8 ONNX with "
    "Q/DQ (`main.py export WEIGHTS --int8 --int8-target tensorrt --calibration DATA`) and "
    "build that"
)


def build_settings(
    trt_version: str,
    precision: str,
    onnx_precision: str,
    dla: bool = False,
    calibrated: bool = False,
) -> BuildSettings:
    """Flags per version:
    - TRT < 10: EXPLICIT_BATCH must be asked for (the 8.x ONNX parser refuses other
      networks); 10.x ignores it; 11.x removed it (pyCore.cpp release/11.1:1771-1777).
    - TRT 11 is always strongly typed (its STRONGLY_TYPED flag is "deprecated and ignored",
      NvInfer.h release/11.1:11462-11480) and has no FP16 flag: FP16 needs an FP16 ONNX
      (`main.py export --fp16`, L2Norm kept FP32 inside).
    - TRT 8.5-10.x with an FP32 ONNX: BuilderFlag.FP16, with the L2Norm layers (their sum
      of squares overflows FP16), the input conversion, softmax, decoding and NMS pinned to
      FP32 under OBEY_PRECISION_CONSTRAINTS (see pin_fp32).
    - An FP16 ONNX builds strongly typed on 10.x (its casts already keep those in FP32);
      8.x has no strong typing, so there it is built like an FP32 ONNX.
    - DLA runs FP16 or INT8 only, so FP32 is refused; GPU_FALLBACK lets the layers the DLA
      cannot run (softmax, NMS) run on the GPU.
    - INT8 from an INT8 ONNX (Q/DQ, explicit quantization): 8.x needs BuilderFlag.INT8 ("to
      enable any quantization operations, the INT8 flag must be set", TensorRT 8.6 developer
      guide, "Working with INT8"), plus FP16 with the float tail pinned to FP32 for the
      layers between; 10.x and 11.x build it strongly typed ("use explicit quantization with
      strong typing; precision-control build flags are not required", 10.x/11.x guide).
    - INT8 from an FP32 ONNX (implicit quantization): an entropy calibrator measures the
      ranges (`calibrated`), INT8 + FP16 flags with the tail pinned to FP32; 8.x and 10.x
      only (calibrators are deprecated since 10.1 and gone in 11.0).
    """
    if precision not in ("fp16", "fp32", "int8"):
        raise EngineError(f"precision must be fp16, fp32 or int8, got {precision!r}")
    if dla and precision == "fp32":
        raise EngineError(DLA_FP32)
    major = trt_major(trt_version)
    net: list[str] = []
    flags: list[str] = []
    pin = False
    if major < 10:
        net.append("EXPLICIT_BATCH")
    if onnx_precision == "int8" and precision != "int8":
        raise EngineError("this ONNX is INT8 (Q/DQ): build it with --int8")
    if precision == "int8":
        if onnx_precision == "fp16":
            raise EngineError("an INT8 engine needs an FP32 or an INT8 ONNX, not an FP16 one")
        if onnx_precision == "int8" and major >= 10:
            if major == 10:
                net.append("STRONGLY_TYPED")
            return BuildSettings(
                tuple(net), ("GPU_FALLBACK",) if dla else (), False, strongly_typed=True
            )
        if onnx_precision != "int8":
            if major >= 11:
                raise EngineError(NO_CALIBRATORS.format(v=trt_version))
            if not calibrated:
                raise EngineError(
                    "an INT8 engine from an FP32 ONNX needs calibration images: give "
                    "--calibration DATA, or build an INT8 ONNX (`main.py export WEIGHTS "
                    "--int8 --int8-target tensorrt --calibration DATA`)"
                )
        flags += ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]
        if dla:
            flags.append("GPU_FALLBACK")
        return BuildSettings(tuple(net), tuple(flags), True, False)
    strongly_typed = major >= 11 or (major >= 10 and onnx_precision == "fp16")
    if strongly_typed:
        if major == 10:
            net.append("STRONGLY_TYPED")
        if precision == "fp16" and onnx_precision != "fp16":
            raise EngineError(
                f"TensorRT {trt_version} builds only strongly typed networks: for an FP16 "
                "engine export an FP16 ONNX (`main.py export WEIGHTS --fp16`)"
            )
        if precision == "fp32" and onnx_precision == "fp16":
            raise EngineError("this ONNX is FP16; an FP32 engine needs an FP32 ONNX export")
    elif precision == "fp32" and onnx_precision == "fp16":
        raise EngineError("this ONNX is FP16; an FP32 engine needs an FP32 ONNX export")
    elif precision == "fp16":
        flags += ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
        pin = True
    if dla:
        flags.append("GPU_FALLBACK")
    return BuildSettings(tuple(net), tuple(flags), pin, strongly_typed)


# Layers never pinned: shape and constant layers, casts (an IIdentityLayer with its output
# type set in 8.5: pinning it would change the cast, onnx-tensorrt 8.5-GA
# builtin_op_importers.cpp:327-328), plugins (EfficientNMS_TRT's outputs 0 and 3 are INT32
# only, efficientNMSPlugin.cpp:271-276) and NMS (INT32 indices, NvInfer.h release/8.6:6544).
_NEVER_PINNED = ("SHAPE", "CONSTANT", "IDENTITY", "CAST", "PLUGIN", "PLUGIN_V2", "PLUGIN_V3", "NMS")


def pin_fp32(network, trt, prefixes=(C.L2NORM_PREFIX, C.FP32_PREFIX, C.NMS_PREFIX)) -> int:
    """Sets FP32 precision and FP32 output types on the float layers whose names start with
    `prefixes` (the parser names layers after the ONNX nodes, which export names l2norm/,
    fp32/ and nms/); returns how many. As trtexec does (samples/common/sampleEngines.cpp
    release/8.6:522-624): a layer whose default precision is not float, or that reads a
    shape tensor, is left alone, and only float outputs get an output type. Under
    OBEY_PRECISION_CONSTRAINTS a float type asked of an integer output fails the build
    (NvInfer.h release/8.6:703-722: TopK's indices are "always Int32", shape operations'
    outputs must be INT32)."""
    floats = {trt.float32, trt.float16}
    never = {getattr(trt.LayerType, n) for n in _NEVER_PINNED if hasattr(trt.LayerType, n)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not layer.name.startswith(prefixes) or layer.type in never:
            continue
        if layer.precision not in floats:
            continue
        if layer.num_inputs and getattr(layer.get_input(0), "is_shape_tensor", False):
            continue
        outs = [
            j
            for j in range(layer.num_outputs)
            if layer.get_output(j).dtype in floats
            and not getattr(layer.get_output(j), "is_shape_tensor", False)
        ]
        if not outs:
            continue
        layer.precision = trt.float32
        for j in outs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def engine_cache_name(
    onnx_sha: str,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    dla_core: int | None = None,
    calibration: str | None = None,
) -> str:
    """The engine's file name: an engine only runs on the TensorRT version and GPU that built
    it, so all of them are in the name (and in the sidecar JSON), and a calibrated INT8
    engine is one per calibration image set (`calibration`, its key)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    dla = f"_dla{dla_core}" if dla_core is not None else ""
    cal = f"-cal{calibration[:8]}" if calibration else ""
    sm = compute_capability
    return f"ssd300_{onnx_sha[:12]}_{precision}{cal}{dla}_trt{trt_version}_{gpu}_sm{sm}.engine"


def engine_mismatch(meta: dict, trt_version: str, gpu: str, sm: str) -> str | None:
    """Why an engine described by its build sidecar (`meta`) cannot run here, or None.
    Engines are specific to the TensorRT version and the GPU (a Jetson's engine does not
    run on a desktop, nor one from JetPack 5 on JetPack 6)."""
    built = (meta.get("tensorrt"), meta.get("gpu"), meta.get("sm"))
    if None in built or built == (trt_version, gpu, sm):
        return None
    here = f"TensorRT {trt_version} on {gpu} (sm{sm})"
    there = f"TensorRT {built[0]} on {built[1]} (sm{built[2]})"
    # Another GPU model of the same SM is refused too: without hardware compatibility mode
    # TensorRT tunes an engine for the GPU that built it (TensorRT "Support Policies").
    return (
        f"this engine was built with {there}; this machine has {here}. Engines only run "
        "where they were built: copy the .onnx here and build with `main.py build MODEL.onnx`"
    )


def _check(result, what: str):
    """cuda-python calls return (err, *values); raise on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        cudart = _import_cudart()
        name = cudart.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise EngineError(f"CUDA error in {what}: {name} ({int(err)})")
    return values[0] if len(values) == 1 else values


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'MAJOR.MINOR') through cuda-python."""
    cudart = _import_cudart()
    count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if count < 1:
        raise EngineError("no CUDA GPU found")
    prop = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return name.strip("\x00 "), f"{prop.major}{prop.minor}"


@dataclass(frozen=True)
class Calibration:
    """Images for TensorRT's INT8 calibration of an FP32 ONNX.

    frames: returns an iterator of uint8 [1, S, S, 3] BGR frames (the network's input);
    key: identifies the image set (the calibration cache and the engine cache are keyed by
    it); source: a description for messages."""

    frames: Callable[[], Iterator[np.ndarray]]
    key: str
    source: str = ""


def make_calibrator(trt, cudart, calibration: Calibration, shape, cache_path: Path, log=print):
    """An IInt8EntropyCalibrator2 (the calibrator NVIDIA recommends for CNNs) that feeds the
    frames one at a time through one device buffer, and reads/writes the calibration cache,
    so a rebuild (another workspace, a lost engine) does not run the images again (they are
    still listed: their paths and sizes key the cache). The Python
    interface is TensorRT's (samples/python/int8_caffe_mnist/calibrator.py, release/8.6):
    get_batch_size(), get_batch(names) -> [device pointer] or None when done,
    read_calibration_cache() -> bytes or None, write_calibration_cache(cache)."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise EngineError(NO_CALIBRATORS.format(v=trt.__version__))
    nbytes = int(np.prod(shape))

    class EntropyCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampolines need the base initialized
            self.frames = None
            self.count = 0
            self.host_ptr = self.device = self.stream = None
            try:
                self.stream = _check(
                    cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                    "cudaStreamCreateWithFlags",
                )
                self.host_ptr = _check(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
                buf = (ctypes.c_uint8 * nbytes).from_address(self.host_ptr)
                self.host = np.frombuffer(buf, np.uint8).reshape(shape)
                self.device = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            except BaseException:
                self.close()  # what was allocated before the failure
                raise

        def get_batch_size(self) -> int:
            return int(shape[0])

        def get_batch(self, names, *_):
            if self.frames is None:
                self.frames = iter(calibration.frames())
            frame = next(self.frames, None)
            if frame is None:
                return None
            self.host[...] = np.asarray(frame, np.uint8).reshape(shape)
            kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(
                cudart.cudaMemcpyAsync(self.device, self.host_ptr, nbytes, kind, self.stream),
                "cudaMemcpyAsync",
            )
            _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            self.count += 1
            return [int(self.device)]

        def read_calibration_cache(self):
            if cache_path.is_file():
                log(f"calibration cache: {cache_path} (no images needed)")
                return cache_path.read_bytes()
            log(f"calibrating on {calibration.source or 'the given images'}")
            return None

        def write_calibration_cache(self, cache) -> None:
            atomic_write_bytes(cache_path, bytes(cache))
            log(f"calibration cache written: {cache_path} ({self.count} images)")

        def close(self) -> None:
            if self.device is not None:
                cudart.cudaFree(self.device)
            if self.host_ptr is not None:
                cudart.cudaFreeHost(self.host_ptr)
            if self.stream is not None:
                cudart.cudaStreamDestroy(self.stream)
            self.device = self.host_ptr = self.stream = None

    return EntropyCalibrator()


def build_engine(
    onnx_path: str | Path,
    output: str | Path | None = None,
    precision: str = "fp16",
    workspace_mb: int = 1024,
    dla_core: int | None = None,
    cache_dir: str | Path | None = None,
    log=print,
    calibration: Calibration | None = None,
) -> Path:
    """Builds (or finds in the cache) the engine of an exported ONNX for this GPU and TensorRT.

    The timing cache in `cache_dir` is reused between builds. An INT8 ONNX (Q/DQ) always
    builds INT8; `calibration` makes an INT8 engine of an FP32 ONNX (TensorRT 8.x/10.x), its
    calibration cache kept in `cache_dir`. Returns the engine's path.
    """
    if dla_core is not None and precision == "fp32":
        raise EngineError(DLA_FP32)
    trt = _import_trt()
    onnx_path = Path(onnx_path)
    info = read_onnx_info(onnx_path)
    if info.precision == "int8":
        if info.quantized_for not in ("tensorrt", "unknown"):
            raise EngineError(
                f"{onnx_path} is quantized for {info.quantized_for} (unsigned activations), "
                "which TensorRT does not take: export it with --int8-target tensorrt"
            )
        if precision != "int8":
            log(f"{onnx_path.name} is an INT8 (Q/DQ) ONNX: building INT8")
            precision = "int8"
    if precision != "int8" or info.precision == "int8":
        calibration = None  # only an implicit INT8 build calibrates
    # what to ask the builder for; refuses what this TensorRT cannot build before the cache
    settings = build_settings(
        trt.__version__, precision, info.precision, dla_core is not None, calibration is not None
    )
    sha = sha256_file(onnx_path)
    gpu, cc = gpu_identity()
    name = engine_cache_name(
        sha, trt.__version__, gpu, cc, precision, dla_core, calibration.key if calibration else None
    )
    cache_dir = fileio.cache_dir("engines", cache_dir)
    out = Path(output) if output else cache_dir / name
    meta = {
        "onnx_sha256": sha,
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "sm": cc,
        "precision": precision,
        "dla_core": dla_core,
        "calibration": calibration.key if calibration else None,
        "onnx": str(onnx_path),
    }
    sidecar = out.with_suffix(out.suffix + ".json")
    described = out.with_suffix(out.suffix + ".meta.json")  # what the runtime reads
    if out.is_file() and sidecar.is_file() and described.is_file():
        try:
            built = json.loads(sidecar.read_text())
        except ValueError:  # an unreadable sidecar: rebuild, as for a stale one
            built = {}
        if isinstance(built, dict) and all(built.get(k) == meta[k] for k in CACHE_KEY):
            log(f"engine up to date: {out}")
            return out
        log(f"engine {out} was built for another ONNX, TensorRT or GPU: rebuilding")
    from engine.runtime.trt_compat import require_compatible

    # Before TensorRT sees the file: what its parser would reject or misread, in one line.
    require_compatible(onnx_path, trt.__version__, str(onnx_path))
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    flags = 0
    for f in settings.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, f))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for f in settings.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, f))
    if settings.pin_fp32:
        pinned = pin_fp32(network, trt)
        log(f"kept {pinned} float layers in FP32 (L2Norm, input, softmax, decoding, NMS)")
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise EngineError(
                f"DLA core {dla_core} asked for; this device has {builder.num_DLA_cores}"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
    timing_path = cache_dir / f"timing_trt{trt.__version__}_sm{cc}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)
    calibrator = None
    if calibration is not None:
        if trt_major(trt.__version__) >= 10:
            log(f"note: TensorRT {trt.__version__} deprecates calibrators; an INT8 ONNX (export "
                "--int8 --int8-target tensorrt) is the lasting way")  # fmt: skip
        calib_path = cache_dir / (
            f"calibration_{sha[:12]}_{calibration.key[:12]}_trt{trt.__version__}.cache"
        )
        shape = (1, info.input_size, info.input_size, 3)
        calibrator = make_calibrator(trt, _import_cudart(), calibration, shape, calib_path, log)
    article = "an" if precision == "int8" else "a"
    what = f"{article} {precision} TensorRT {trt.__version__} engine"
    log(f"building {what} for {gpu} (minutes on a Jetson)")
    try:
        if calibrator is not None:
            config.int8_calibrator = calibrator
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        raise EngineError(f"TensorRT failed to build {onnx_path} (see its messages above)")
    # The model description first (the runtime needs the class names), the build sidecar
    # last: a build killed in between is never taken for an up-to-date engine.
    sidecar.unlink(missing_ok=True)  # a stale one must never vouch for the new engine
    atomic_write_bytes(described, json.dumps({**info.__dict__, "dla_core": dla_core}).encode())
    atomic_write_bytes(out, bytes(serialized))
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(sidecar, json.dumps(meta, indent=2).encode())
    log(f"engine written: {out}")
    return out


class TensorRTDetector(Detector):
    """Runs a TensorRT engine (or builds one from an exported ONNX first, cached).

    Memory with cuda-python: pinned host buffers and device buffers allocated once, a
    dedicated non-blocking stream, asynchronous copies and execute_async_v3. Create and use
    it in the same thread; CUDA's primary context makes that thread any thread.
    """

    backend = "tensorrt"

    def __init__(
        self,
        model: str | Path,
        precision: str = "fp16",
        workspace_mb: int | None = None,
        dla_core: int | None = None,
        cache_dir: str | Path | None = None,
        log=print,
    ) -> None:
        self._cudart = None  # set once the device memory exists; None again after close()
        if dla_core is not None and precision == "fp32":
            raise EngineError(DLA_FP32)
        trt = _import_trt()
        cudart = _import_cudart()
        model = Path(model)
        if workspace_mb is None:  # what fits this device (smaller on small Jetsons)
            from engine.runtime.platform import current_platform, default_workspace_mb

            workspace_mb = default_workspace_mb(current_platform())
        if model.suffix == ".onnx":
            model = build_engine(model, None, precision, workspace_mb, dla_core, cache_dir, log)
        info, engine_dla = self._engine_info(model)
        sidecar = model.with_suffix(model.suffix + ".json")
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except ValueError:
                meta = {}
            gpu, cc = gpu_identity()
            why = engine_mismatch(meta, trt.__version__, gpu, cc)
            if why:
                raise EngineError(f"{model}: {why}")
        _check(cudart.cudaSetDevice(0), "cudaSetDevice")
        self._cudart = cudart
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        self._runtime = trt.Runtime(logger)
        if engine_dla is not None:  # a DLA engine runs on the core it was built for
            self._runtime.DLA_core = engine_dla
        engine = self._runtime.deserialize_cuda_engine(model.read_bytes())
        if engine is None:
            raise EngineError(
                f"{model}: TensorRT {trt.__version__} cannot load this engine: it was built by "
                "another TensorRT version or for another GPU, or it is corrupt. Rebuild it here "
                "with `main.py build MODEL.onnx`"
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        missing = [n for n in (C.INPUT, *C.OUTPUTS) if n not in names]
        if missing:
            raise EngineError(f"{model}: not an SSD300 engine of this project (no {missing[0]})")
        self.host: dict[str, np.ndarray] = {}
        self.device_ptrs: dict[str, int] = {}
        self._host_ptrs: list[int] = []
        self.stream = None
        try:
            self.stream = _check(
                cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                "cudaStreamCreateWithFlags",
            )
            for name in names:
                self._allocate(trt, name)
        except BaseException:
            self._free(cudart)  # what was allocated before the failure
            raise
        super().__init__(info, f"cuda:0 ({trt.__version__})")

    def _allocate(self, trt, name: str) -> None:
        """A pinned host buffer (seen as a numpy array) and a device buffer for one I/O
        tensor of the engine's static shape and type; the context gets the device address."""
        cudart = self._cudart
        shape = tuple(self.engine.get_tensor_shape(name))
        dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        nbytes = int(np.prod(shape)) * dtype.itemsize
        host_ptr = _check(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
        self._host_ptrs.append(host_ptr)
        buf = (ctypes.c_uint8 * nbytes).from_address(host_ptr)
        self.host[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
        self.device_ptrs[name] = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
        self.context.set_tensor_address(name, self.device_ptrs[name])

    @staticmethod
    def _engine_info(engine_path: Path) -> tuple[ModelInfo, int | None]:
        """The model description and DLA core stored beside an engine by build_engine."""
        if not engine_path.is_file():
            raise EngineError(
                f"engine not found: {engine_path}; build it with `main.py build MODEL.onnx`"
            )
        meta = engine_path.with_suffix(engine_path.suffix + ".meta.json")
        if not meta.is_file():
            raise EngineError(
                f"{engine_path}: no {meta.name} beside it (`main.py build` writes one)"
            )
        try:
            d = json.loads(meta.read_text())
            dla = d.pop("dla_core", None)
            return ModelInfo(**d), dla
        except (ValueError, TypeError) as e:
            raise EngineError(f"{meta}: unreadable model description ({e})") from None

    def _require_open(self) -> None:
        """The host buffers are views on pinned memory that close() frees: touching them
        after that would crash the process, so refuse instead."""
        if self._cudart is None:
            raise EngineError("this TensorRT detector is closed; open the model again")

    def preprocess(self, frame, out=None):
        # Resize straight into the pinned input buffer (no extra copy).
        if out is None:
            self._require_open()
            out = self.host[C.INPUT][0]
        return super().preprocess(frame, out=out)

    def detect_batch(self, frames, score_threshold=None, classes=None):
        out = []
        for f in frames:
            with self._lock:
                self._require_open()
                self.preprocess(f)
                num, boxes, scores, cls = self._run()
                out.append(
                    self.to_detections(
                        num[0], boxes[0], scores[0], cls[0], f.shape, score_threshold, classes
                    )
                )
        return out

    def _infer(self, batch: np.ndarray):
        self._require_open()
        self.host[C.INPUT][...] = batch
        return self._run()

    def _run(self):
        cudart = self._cudart
        h2d, d2h = (
            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
            cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        )
        inp = self.host[C.INPUT]
        _check(
            cudart.cudaMemcpyAsync(
                self.device_ptrs[C.INPUT], inp.ctypes.data, inp.nbytes, h2d, self.stream
            ),
            "cudaMemcpyAsync",
        )
        if not self.context.execute_async_v3(self.stream):
            raise EngineError("TensorRT execution failed")
        for name in C.OUTPUTS:
            arr = self.host[name]
            _check(
                cudart.cudaMemcpyAsync(
                    arr.ctypes.data, self.device_ptrs[name], arr.nbytes, d2h, self.stream
                ),
                "cudaMemcpyAsync",
            )
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return tuple(self.host[n].copy() for n in C.OUTPUTS)

    def close(self) -> None:
        """Frees the device and pinned memory and the stream; detect() afterwards raises."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        lock = getattr(self, "_lock", None)
        if lock is not None:  # not while another thread is inside _run
            with lock:
                self._free(cudart)
        else:
            self._free(cudart)

    def _free(self, cudart) -> None:
        self.host = {}  # drop the numpy views before their memory goes
        for ptr in getattr(self, "device_ptrs", {}).values():
            cudart.cudaFree(ptr)
        for ptr in getattr(self, "_host_ptrs", []):
            cudart.cudaFreeHost(ptr)
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
        self.device_ptrs, self._host_ptrs, self.stream, self._cudart = {}, [], None, None
