"""Opt-in GPU levers for the denoise core (issue 10), each behind its own switch, all off by default.

    accel = Accel(compile=True, cuda_graphs=True)                # checked when made (InputError)
    with accelerated(models, accel, deepcache=False) as run:      # one scope per job
        context = DenoiseContext(unet=run.unet, vae=run.vae, vae_tiling=run.vae_tiling, ...)

The levers:

* ``compile``: ``torch.compile`` of the whole UNet call (``dynamic=False``: one compile per batch shape, which is
  fixed per window batch). The first call of a shape logs a warning (it takes minutes with inductor). Compiled
  kernels go to torch's own caches and, when a cache folder is known (``compile_cache_dir``, else
  ``<models folder>/compile_cache``), into one file per shape there through torch's portable cache API
  (``torch.compiler.save_cache_artifacts`` / ``load_cache_artifacts``); files are loaded back at the start of
  a later job or process. No environment variable or torch setting is changed for it.
* ``channels_last``: the 4-D weights of the UNet and the VAE (their 2-D convolutions; the UNet folds frames into
  the batch) are stored channels-last while the job runs, so the convolutions run in NHWC; restored after.
* ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` on while the job runs, the previous value restored after
  (reference-counted, so overlapping jobs restore it once, at the end of the last one). No effect off CUDA.
* ``cuda_graphs``: the UNet call (eager or compiled) is captured once per input shape as a CUDA graph and
  replayed; inputs are copied into the graph's buffers and the output is cloned out. Graphs and their memory
  pools are freed at the end of the job.
* ``vae_tiling``: decode in diffusers' overlapping spatial tiles (``AutoencoderKL.tiled_decode``, the VAE's own
  tile size) when a latent is larger than one tile — lower decode memory, slightly different pixels.

Impossible combinations raise :class:`~latentsync.errors.InputError` with what to change (``Accel.check``):
``cuda_graphs`` off a CUDA device (refused rather than silently ignored, so a lever is never thought on when
it is not), and ``compile`` or ``cuda_graphs`` with DeepCache (its cached-features branch changes the UNet's work
every step: it would recompile every step, and a captured graph would replay the wrong branch).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError

log = logging.getLogger(__name__)

COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")  # eager / aot_eager: wiring checks without code generation
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")  # inductor only; CUDA graphs are their own lever


@dataclass(frozen=True)
class Accel:
    """The switches. The defaults (all off) leave the job exactly as without this module."""

    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str = "default"
    compile_cache_dir: str | Path | None = None  # default: <models folder>/compile_cache (torch's temp cache if unknown)
    channels_last: bool = False
    cudnn_benchmark: bool = False
    cuda_graphs: bool = False
    vae_tiling: bool = False

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise InputError(f"Invalid acceleration setting: {f.name} must be true or false, got {value!r}.")
        if self.compile_backend not in COMPILE_BACKENDS:
            raise InputError(f"Invalid acceleration setting: compile_backend must be one of {COMPILE_BACKENDS}, "
                             f"got {self.compile_backend!r}.")
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"Invalid acceleration setting: compile_mode must be one of {COMPILE_MODES}, "
                             f"got {self.compile_mode!r}.")
        if self.compile_cache_dir is not None and not self.compile:
            raise InputError("Invalid acceleration setting: compile_cache_dir is only used with compile=True.")

    @property
    def enabled(self) -> bool:
        """True when any lever is on."""
        return any((self.compile, self.channels_last, self.cudnn_benchmark, self.cuda_graphs, self.vae_tiling))

    def describe(self) -> str:
        """E.g. ``compile(inductor), channels-last, cuda-graphs``; ``off`` when nothing is on."""
        parts = [f"compile({self.compile_backend}{'' if self.compile_mode == 'default' else ', ' + self.compile_mode})"
                 if self.compile else "", "channels-last" if self.channels_last else "",
                 "cudnn-benchmark" if self.cudnn_benchmark else "", "cuda-graphs" if self.cuda_graphs else "",
                 "vae-tiling" if self.vae_tiling else ""]
        return ", ".join(p for p in parts if p) or "off"

    def check(self, device: torch.device | str, *, deepcache: bool = False) -> None:
        """Raise InputError for a combination that cannot work on ``device`` (see the module docstring)."""
        device = torch.device(device)
        if self.cuda_graphs and device.type != "cuda":
            raise InputError(f"cuda_graphs needs a CUDA GPU, but this job runs on {device}: turn cuda_graphs off.")
        for lever, on in (("compile", self.compile), ("cuda_graphs", self.cuda_graphs)):
            if on and deepcache:
                raise InputError(f"{lever} cannot be combined with DeepCache (DeepCache changes the UNet's work "
                                 f"every step): turn DeepCache or {lever} off.")


@dataclass(frozen=True)
class Accelerated:
    """What the denoise context uses inside the scope: ``unet`` (called like the UNet), ``vae`` and whether the
    VAE decodes in tiles (``latentsync.models.vae.decode(..., tiled=vae_tiling)``)."""

    unet: Callable[..., torch.Tensor]
    vae: Any
    vae_tiling: bool = False


@contextmanager
def accelerated(models, accel: Accel, *, deepcache: bool = False) -> Iterator[Accelerated]:
    """Apply ``accel`` to ``models`` (anything with ``unet``, ``vae``, ``device`` and optionally ``model_dir``)
    for one job; every model attribute and torch setting it changed is restored when the block ends."""
    device = torch.device(models.device)
    accel.check(device, deepcache=deepcache)
    if not accel.enabled:
        yield Accelerated(models.unet, models.vae)
        return
    log.info("GPU levers for this job: %s", accel.describe())
    with ExitStack() as scope:
        if accel.cudnn_benchmark:
            scope.enter_context(cudnn_benchmark_scope(device))
        if accel.channels_last:
            scope.enter_context(channels_last_scope(models.unet, models.vae))
        unet: Callable[..., torch.Tensor] = models.unet
        if accel.compile:
            folder = accel.compile_cache_dir or (Path(models.model_dir) / "compile_cache"
                                                 if getattr(models, "model_dir", None) else None)
            unet = CompiledUNet(models.unet, accel.compile_backend, accel.compile_mode,
                                CompileCache(Path(folder), device) if folder else None)
        if accel.cuda_graphs:
            graphs = CudaGraphUNet(unet, device)
            scope.callback(graphs.release)
            unet = graphs
        yield Accelerated(unet, models.vae, accel.vae_tiling)


# ------------------------------------------------------------------------------------------ cuDNN benchmark
_cudnn_lock = threading.Lock()
_cudnn_users = 0
_cudnn_previous = False


@contextmanager
def cudnn_benchmark_scope(device: torch.device) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = True`` while any such scope is open; then the value from before."""
    global _cudnn_users, _cudnn_previous
    if torch.device(device).type != "cuda":
        log.info("cudnn_benchmark has no effect on %s; left unchanged", device)
        yield
        return
    with _cudnn_lock:
        if _cudnn_users == 0:
            _cudnn_previous = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
        _cudnn_users += 1
    try:
        yield
    finally:
        with _cudnn_lock:
            _cudnn_users -= 1
            if _cudnn_users == 0:
                torch.backends.cudnn.benchmark = _cudnn_previous


# ------------------------------------------------------------------------------------------ channels-last
@contextmanager
def channels_last_scope(*modules: torch.nn.Module) -> Iterator[None]:
    """Store the contiguous 4-D parameters of ``modules`` channels-last; contiguous again afterwards (same
    Parameter objects, same values)."""
    changed = []
    with torch.inference_mode(False), torch.no_grad():
        for module in modules:
            for param in module.parameters():
                if param.dim() == 4 and param.is_contiguous():
                    param.data = param.data.contiguous(memory_format=torch.channels_last)
                    changed.append(param)
    try:
        yield
    finally:
        with torch.inference_mode(False), torch.no_grad():
            for param in changed:
                param.data = param.data.contiguous()


@contextmanager
def conv_input_formats(module: torch.nn.Module) -> Iterator[dict[str, int]]:
    """Count, while the block runs, how many 2-D convolution inputs of ``module`` arrive channels-last
    (``{"channels_last": n, "other": m}``) — to see whether channels-last reaches the convolutions."""
    counts = {"channels_last": 0, "other": 0}

    def count(_conv, args):
        x = args[0]
        strict = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        counts["channels_last" if strict else "other"] += 1

    hooks = [m.register_forward_pre_hook(count) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        yield counts
    finally:
        for hook in hooks:
            hook.remove()


# ------------------------------------------------------------------------------------------ torch.compile
def _unet_forward(unet, sample, timestep, encoder_hidden_states, **kwargs):
    return unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **kwargs)


@functools.lru_cache(maxsize=None)
def compiled_forward(backend: str, mode: str) -> Callable[..., torch.Tensor]:
    """One compiled function per (backend, mode) for the whole process. The UNet is an argument (its weights are
    graph inputs), so the compiled code does not keep a model alive and serves every UNet of the same
    architecture; a new shape or architecture compiles again."""
    options = {"mode": mode} if backend == "inductor" else {}
    return torch.compile(_unet_forward, backend=backend, dynamic=False, **options)


_compiled_shapes: set[tuple] = set()  # (backend, mode, architecture, input shapes) compiled in this process


def _shape_key(*tensors) -> tuple:
    return tuple(None if t is None else (tuple(t.shape), str(t.dtype), str(t.device)) for t in tensors)


class CompiledUNet:
    """Calls the UNet through ``torch.compile``; logs before the first call of each new shape (a compile) and
    saves the compiled artifacts to ``cache`` after it."""

    def __init__(self, unet, backend: str = "inductor", mode: str = "default", cache: CompileCache | None = None):
        self.unet, self.backend, self.mode, self.cache = unet, backend, mode, cache
        self._forward = compiled_forward(backend, mode)
        self._architecture = json.dumps(getattr(unet, "config", {}), sort_keys=True, default=str)
        if cache is not None:
            cache.load()

    def __call__(self, sample, timestep, encoder_hidden_states=None, **kwargs) -> torch.Tensor:
        timestep = torch.as_tensor(timestep, device=sample.device)
        key = (self.backend, self.mode, self._architecture, _shape_key(sample, timestep, encoder_hidden_states))
        if key in _compiled_shapes:
            return self._forward(self.unet, sample, timestep, encoder_hidden_states, **kwargs)
        where = f"cached in {self.cache.folder}" if self.cache else "cached in torch's temporary cache only"
        log.warning("torch.compile (%s): compiling the UNet for input %s — the first window takes longer "
                    "(minutes with inductor); %s", self.backend, "x".join(map(str, sample.shape)), where)
        start = time.perf_counter()
        out = self._forward(self.unet, sample, timestep, encoder_hidden_states, **kwargs)
        _compiled_shapes.add(key)
        log.info("UNet compiled (or found in the cache) in %.1f s", time.perf_counter() - start)
        if self.cache is not None:
            self.cache.save(tuple(sample.shape))
        return out


class CompileCache:
    """A folder of torch's portable compile-cache files (``torch.compiler.save_cache_artifacts``), one per
    (torch version, device, UNet input shape); ``load`` hands every matching file to torch once per process."""

    _loaded: set[Path] = set()

    def __init__(self, folder: Path, device: torch.device):
        self.folder = Path(folder)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        self.prefix = re.sub(r"[^A-Za-z0-9.]+", "_", f"unet-torch{torch.__version__}-{name}")

    def files(self) -> list[Path]:
        return sorted(self.folder.glob(f"{self.prefix}-*.bin")) if self.folder.is_dir() else []

    def load(self) -> None:
        if not hasattr(torch.compiler, "load_cache_artifacts"):
            return
        for path in self.files():
            if path in CompileCache._loaded:
                continue
            CompileCache._loaded.add(path)
            try:
                torch.compiler.load_cache_artifacts(path.read_bytes())
                log.info("loaded compiled UNet kernels from %s", path)
            except Exception as exc:  # a stale or broken cache only costs a compile
                log.warning("ignoring the compile cache %s: %s", path, exc)

    def save(self, shape: tuple[int, ...]) -> Path | None:
        if not hasattr(torch.compiler, "save_cache_artifacts"):  # torch < 2.7: torch's own caches only
            return None
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None:  # nothing to save (e.g. the eager test backends)
            return None
        path = self.folder / f"{self.prefix}-{'x'.join(map(str, shape))}.bin"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(artifacts[0])
            partial.replace(path)
        except OSError as exc:
            log.warning("could not write the compile cache %s: %s", path, exc)
            return None
        CompileCache._loaded.add(path)
        return path


# ------------------------------------------------------------------------------------------ CUDA graphs
def capture_cuda_graph(fn: Callable[..., torch.Tensor], inputs: tuple, pool=None, warmup: int = 2
                       ) -> tuple[Callable[[], None], torch.Tensor, torch.Tensor]:
    """Run ``fn(*inputs)`` ``warmup`` times on a side stream (compiles, cuDNN timing, lazy inits), then capture
    it as a CUDA graph in memory ``pool``. Returns (replay, the graph's output buffer, the warm-up output).
    Only this thread is held to capture rules: the pipeline's other threads may use CUDA meanwhile."""
    device = next(x.device for x in inputs if x is not None)
    main = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        for _ in range(max(1, warmup)):
            first = fn(*inputs)
    main.wait_stream(side)
    first.record_stream(main)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        output = fn(*inputs)
    return graph.replay, output, first


@dataclass
class _Graph:
    inputs: tuple
    output: torch.Tensor
    replay: Callable[[], None]

    def run(self, inputs: tuple) -> torch.Tensor:
        for buffer, x in zip(self.inputs, inputs):
            if buffer is not None:
                buffer.copy_(x)
        self.replay()
        return self.output.clone()  # the next replay overwrites the buffer (e.g. the other CFG half)


class CudaGraphUNet:
    """The UNet call captured as one CUDA graph per input shape (the window batch fixes it) and replayed.

    The graphs share one memory pool: each replay writes every intermediate before reading it and its output is
    cloned out at once, so no graph needs another's memory to survive. ``capture`` is the capture function
    (``capture_cuda_graph``; tests pass a CPU stand-in taking the same arguments)."""

    def __init__(self, unet: Callable[..., torch.Tensor], device: torch.device, capture=capture_cuda_graph):
        self.unet, self.device, self.capture = unet, device, capture
        self._graphs: dict[tuple, _Graph] = {}
        self._pool = None

    @property
    def captured(self) -> int:
        return len(self._graphs)

    def _call(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states)

    def __call__(self, sample, timestep, encoder_hidden_states=None, *, cache=None, step_index=None) -> torch.Tensor:
        if cache is not None:
            raise InputError("cuda_graphs cannot run DeepCache steps: turn DeepCache or cuda_graphs off.")
        inputs = (sample, torch.as_tensor(timestep, device=sample.device), encoder_hidden_states)
        key = _shape_key(*inputs)
        graph = self._graphs.get(key)
        if graph is not None:
            return graph.run(inputs)
        buffers = tuple(None if x is None else x.clone() for x in inputs)
        log.info("capturing a CUDA graph of the UNet for input %s", "x".join(map(str, sample.shape)))
        if self._pool is None and self.device.type == "cuda":
            self._pool = torch.cuda.graph_pool_handle()
        replay, output, first = self.capture(self._call, buffers, self._pool)
        self._graphs[key] = _Graph(buffers, output, replay)
        return first

    def release(self) -> None:
        """Drop the graphs and their buffers (their memory returns to the allocator)."""
        self._graphs.clear()
        self._pool = None


# ------------------------------------------------------------------------------------------ front ends
def add_accel_arguments(parser) -> None:
    """The levers as command-line flags (shared by the CLI and bench/gpu.py)."""
    group = parser.add_argument_group("GPU levers (all off by default)")
    group.add_argument("--compile", action="store_true", help="torch.compile the UNet (first window: minutes)")
    group.add_argument("--compile-backend", default="inductor", choices=COMPILE_BACKENDS)
    group.add_argument("--compile-mode", default="default", choices=COMPILE_MODES)
    group.add_argument("--compile-cache-dir", default=None,
                       help="folder for compiled kernels (default: <models folder>/compile_cache)")
    group.add_argument("--channels-last", action="store_true", help="run the UNet/VAE convolutions in NHWC")
    group.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms (CUDA)")
    group.add_argument("--cuda-graphs", action="store_true", help="capture and replay the UNet call (CUDA)")
    group.add_argument("--vae-tiling", action="store_true", help="decode in overlapping tiles (less memory)")


def accel_from_args(args) -> Accel:
    return Accel(compile=args.compile, compile_backend=args.compile_backend, compile_mode=args.compile_mode,
                 compile_cache_dir=args.compile_cache_dir, channels_last=args.channels_last,
                 cudnn_benchmark=args.cudnn_benchmark, cuda_graphs=args.cuda_graphs, vae_tiling=args.vae_tiling)
