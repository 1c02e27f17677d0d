"""TensorRT: FP16 engine builds (8.6, 10.x, 11.x) with a per-device cache, and a runtime on
cuda-python memory.

TensorRT and cuda-python are imported lazily and only here. The version-dependent choices
are small pure functions (`build_settings`, `engine_cache_name`) so they are tested without
a GPU. What has run on real TensorRT is stated in the README.

API used (TensorRT >= 8.5 name-based I/O): Builder / create_network / OnnxParser /
create_builder_config / set_memory_pool_limit / set_flag / build_serialized_network;
Runtime.deserialize_cuda_engine, create_execution_context, num_io_tensors,
get_tensor_name/shape/dtype/mode, set_tensor_address, execute_async_v3.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import contract as C
from engine.runtime import Detector, EngineError, ModelInfo, read_onnx_info

DEFAULT_CACHE = Path.home() / ".cache" / "ssd300" / "engines"


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
    pin_l2norm_fp32: bool  # set L2Norm layers' precision to FP32 (weakly typed FP16 builds)


def build_settings(
    trt_version: str, precision: str, onnx_precision: str, dla: bool = False
) -> BuildSettings:
    """Flags per version:
    - TRT < 10: EXPLICIT_BATCH must be asked for; >= 10 it is the default (removed in 11).
    - TRT 11 is always strongly typed: precision comes from the ONNX; there is no FP16 flag,
      so FP16 needs an FP16 ONNX (`main.py export --fp16`, L2Norm kept FP32 inside).
    - TRT 8.6 / 10.x with an FP32 ONNX: BuilderFlag.FP16, with the L2Norm layers (their
      sum of squares overflows FP16), the input conversion, softmax, decoding and NMS pinned
      to FP32 (OBEY_PRECISION_CONSTRAINTS).
    - An FP16 ONNX builds strongly typed on 10.x (its casts already keep those in FP32);
      8.x has no strong typing, so there it is built like an FP32 ONNX.
    - DLA: GPU_FALLBACK so the layers DLA cannot run (softmax, NMS) stay on the GPU.
    """
    if precision not in ("fp16", "fp32"):
        raise EngineError(f"precision must be fp16 or fp32, got {precision!r}")
    major = trt_major(trt_version)
    net: list[str] = []
    flags: list[str] = []
    pin = False
    if major < 10:
        net.append("EXPLICIT_BATCH")
    strongly_typed = major >= 11 or (major >= 10 and onnx_precision == "fp16")
    if strongly_typed:
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
    return BuildSettings(tuple(net), tuple(flags), pin)


def _write_atomic(path: Path, data: bytes) -> None:
    """Temporary file, then rename: a killed build never leaves half an engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def engine_cache_name(
    onnx_sha: str,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    precision: str,
    dla_core: int | None = None,
) -> str:
    """The engine's file name: an engine only runs on the TensorRT version and GPU that built
    it, so all of them are in the name (and in the sidecar JSON)."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    dla = f"_dla{dla_core}" if dla_core is not None else ""
    sm = compute_capability
    return f"ssd300_{onnx_sha[:12]}_{precision}{dla}_trt{trt_version}_{gpu}_sm{sm}.engine"


def engine_mismatch(meta: dict, trt_version: str, gpu: str, sm: str) -> str | None:
    """Why an engine described by its build sidecar (`meta`) cannot run here, or None.
    Engines are specific to the TensorRT version and the GPU (a Jetson's engine does not
    run on a desktop, nor one from JetPack 5 on JetPack 6)."""
    built = (meta.get("tensorrt"), meta.get("gpu"), meta.get("sm"))
    if None in built or built == (trt_version, gpu, sm):
        return None
    here = f"TensorRT {trt_version} on {gpu} (sm{sm})"
    there = f"TensorRT {built[0]} on {built[1]} (sm{built[2]})"
    if built[0] == trt_version and built[2] == sm:
        return None  # the same GPU architecture under another name (e.g. a driver update)
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


def build_engine(
    onnx_path: str | Path,
    output: str | Path | None = None,
    precision: str = "fp16",
    workspace_mb: int = 1024,
    dla_core: int | None = None,
    cache_dir: str | Path = DEFAULT_CACHE,
    log=print,
) -> Path:
    """Builds (or finds in the cache) the engine of an exported ONNX for this GPU and TensorRT.

    The timing cache in `cache_dir` is reused between builds. Returns the engine's path.
    """
    trt = _import_trt()
    onnx_path = Path(onnx_path)
    info = read_onnx_info(onnx_path)
    sha = file_sha256(onnx_path)
    gpu, cc = gpu_identity()
    name = engine_cache_name(sha, trt.__version__, gpu, cc, precision, dla_core)
    cache_dir = Path(cache_dir)
    out = Path(output) if output else cache_dir / name
    meta = {
        "onnx_sha256": sha,
        "tensorrt": trt.__version__,
        "gpu": gpu,
        "sm": cc,
        "precision": precision,
        "dla_core": dla_core,
        "onnx": str(onnx_path),
    }
    sidecar = out.with_suffix(out.suffix + ".json")
    if out.is_file() and sidecar.is_file():
        try:
            if json.loads(sidecar.read_text()) == meta:
                log(f"engine up to date: {out}")
                return out
        except ValueError:  # an unreadable sidecar: rebuild, as for a stale one
            pass
        log(f"engine {out} was built for another ONNX, TensorRT or GPU: rebuilding")
    settings = build_settings(trt.__version__, precision, info.precision, dla_core is not None)
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
    if settings.pin_l2norm_fp32:
        pinned = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name.startswith((C.L2NORM_PREFIX, C.FP32_PREFIX, C.NMS_PREFIX)):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
                pinned += 1
        log(f"kept {pinned} layers in FP32 (L2Norm, input, softmax, decoding, NMS)")
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
    log(f"building a {precision} TensorRT {trt.__version__} engine for {gpu} (minutes on a Jetson)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build {onnx_path} (see its messages above)")
    _write_atomic(out, bytes(serialized))
    _write_atomic(timing_path, bytes(config.get_timing_cache().serialize()))
    sidecar.write_text(json.dumps(meta, indent=2))
    # Keep the model description beside the engine: the runtime needs the class names.
    out.with_suffix(out.suffix + ".meta.json").write_text(
        json.dumps({**info.__dict__, "dla_core": dla_core})
    )
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
        cache_dir: str | Path = DEFAULT_CACHE,
        log=print,
    ) -> None:
        trt = _import_trt()
        cudart = _import_cudart()
        model = Path(model)
        if workspace_mb is None:  # what fits this device (smaller on small Jetsons)
            from engine.platform import current_platform, default_workspace_mb

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
        self.stream = _check(
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking), "cudaStreamCreate"
        )
        self.host: dict[str, np.ndarray] = {}
        self.device_ptrs: dict[str, int] = {}
        self._host_ptrs: list[int] = []
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        missing = [n for n in (C.INPUT, *C.OUTPUTS) if n not in names]
        if missing:
            raise EngineError(f"{model}: not an SSD300 engine of this project (no {missing[0]})")
        for name in names:
            shape = tuple(engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            host_ptr = _check(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            self._host_ptrs.append(host_ptr)
            buf = (ctypes.c_uint8 * nbytes).from_address(host_ptr)
            self.host[name] = np.frombuffer(buf, dtype=dtype).reshape(shape)
            self.device_ptrs[name] = _check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            self.context.set_tensor_address(name, self.device_ptrs[name])
        super().__init__(info, f"cuda:0 ({trt.__version__})")

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

    def preprocess(self, frame, out=None):
        # Resize straight into the pinned input buffer (no extra copy).
        return super().preprocess(frame, out=self.host[C.INPUT][0] if out is None else out)

    def detect_batch(self, frames, score_threshold=None, classes=None):
        out = []
        for f in frames:
            with self._lock:
                self.preprocess(f)
                num, boxes, scores, cls = self._run()
                out.append(
                    self.to_detections(
                        num[0], boxes[0], scores[0], cls[0], f.shape, score_threshold, classes
                    )
                )
        return out

    def _infer(self, batch: np.ndarray):
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
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr in getattr(self, "device_ptrs", {}).values():
            cudart.cudaFree(ptr)
        for ptr in getattr(self, "_host_ptrs", []):
            cudart.cudaFreeHost(ptr)
        if getattr(self, "stream", None) is not None:
            cudart.cudaStreamDestroy(self.stream)
        self.device_ptrs, self._host_ptrs, self.stream, self._cudart = {}, [], None, None
