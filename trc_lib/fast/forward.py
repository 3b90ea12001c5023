"""The model's forward pass in C: what predict() runs at batch 1 on a CPU, and at every batch in
bfloat16 on a CPU with AMX.

At batch 1 the model's arithmetic is a chain of matrix-vector products of a few hundred rows,
about a microsecond each, while PyTorch spends several microseconds dispatching each of the
hundreds of operations of an answer (and ONNX Runtime about one). `forward.c` is the same
recursion as model.py with nothing between the products: it reads transposed copies of the
model's weights (remade whenever a weight changes), calls the compiled terminal map
(compiled_rollout.py) for a nonlinear task's error feedback, and is compiled once per machine
with the CPU's own vector instructions (`-O3 -march=native`, c_library.py). It computes in float32 like the model;
parity with the eager forward is tested to 1e-5 x max(1, u_max). A net too large for one core's
L2 cache has its products shared by a team of two threads (team_size), which changes no number.

At batch 2 and over the problems are shared out between the threads, each thread solving its
own alone (split). Large batches go to PyTorch, whose matrix-matrix products then use the CPU
better (FAST_FORWARD_MAX_BATCH, SMALL_NET_MAX_BATCH); so do GPUs and torch.compile.

In bfloat16 (set_inference_precision) on a CPU with AMX (Intel Xeon since Sapphire Rapids), the
same file runs groups of problems (32, or 512 for the large model) through the whole recursion
with the shared net, the answer's embedding and the decoder as bfloat16 tiles (tiles() packs the
weights), every other step in float32, each group's activations kept in the core's caches: at
batch 10,000 PyTorch's bfloat16 products alone run near the plain matmul rate, but the
elementwise work between them streams the whole batch through memory (benchmarks/performance.py
times both). The tiles' arithmetic is tested against PyTorch's on the same rounded numbers.
Elsewhere bfloat16 runs in PyTorch under autocast.
"""

from __future__ import annotations

import ctypes
import math
import operator
import threading
import weakref
from pathlib import Path

import numpy as np
import torch

from .c_library import compiled_library, native_flags, cpu_identity
from ..terminal_map import terminal_map

# Which batches predict() sends to forward.c. At batch 2 and over its threads take problems of
# their own (split), so its time per problem is flat in the batch, while PyTorch's falls from
# several milliseconds of dispatch at batch 1 towards its matrix-product rate, which it reaches
# only at batches of hundreds to thousands: past these limits PyTorch is the faster path. A net
# that fits a core's L2 cache (no team: TEAM_ABOVE_BYTES) stays ahead in C much longer than a
# larger one. The limits err high, because switching too early is a step up in the time per
# problem (PyTorch's dispatch spread over too few problems) and too late only a missed gain.
# benchmarks/batch_curve.py measures both paths by batch, and the steps of the curve predict takes.
FAST_FORWARD_MAX_BATCH = 128   # a net with a team
SMALL_NET_MAX_BATCH = 1000     # a net without
ENABLED = True  # False: PyTorch everywhere (pytorch_only)
SOURCE = Path(__file__).with_name("forward.c")
_VERSION = operator.attrgetter("_version")  # a tensor's count of in-place changes
# A shared net whose weights take more bytes than this shares its products between two threads (a
# team, forward.c): each holds half the rows in its own core's L2 cache instead of streaming the
# whole net from L3. Measured at batch 1 (Xeon, 2 MB of L2 per core): the medium model's float32
# net (2.1 MB) 0.70 -> 0.25 ms, its half-precision one (1 MB) 0.43 -> 0.27, the large model's
# 4.0 -> 1.8 (half) and 8.2 -> 4.6 (float32); the small model's (0.44 MB) gains nothing, because
# the threads then wait on each other's outputs for as long as the products take.
TEAM_ABOVE_BYTES = 512 * 1024
TEAM_SIZE = 2  # what was measured (two cores); more threads may pay on more cores (FastForward.threads)
MAX_THREADS = 8  # forward.c's TRC_MAX_THREADS: it runs any more as fewer


def team_size(weight_bytes: int) -> int:
    """Threads for a shared net of weight_bytes: TEAM_SIZE above TEAM_ABOVE_BYTES, and never more
    than PyTorch may use (torch.set_num_threads(1) in a worker process keeps forward.c on one too)."""
    return 1 if weight_bytes <= TEAM_ABOVE_BYTES else max(1, min(TEAM_SIZE, torch.get_num_threads()))


class _Model(ctypes.Structure):
    """forward.c's trc_model."""

    _fields_ = ([(name, ctypes.c_int) for name in
                 ("n", "N_m", "D", "H", "layers", "inner", "outer", "steps", "feedback")]
                + [(name, ctypes.c_float) for name in ("u_max", "state_scale", "eps")]
                + [(name, ctypes.c_void_p) for name in
                   ("embed_context", "embed_controls", "embed_error", "gate_up", "down", "decode", "z_init",
                    "A_N", "G", "terminal")]
                + [(name, ctypes.c_int) for name in
                   ("kind", "y_size", "a_size", "landing_N", "newton_steps", "has_pointing")]
                + [(name, ctypes.c_float) for name in
                   ("alpha", "rho_1", "rho_2", "gravity", "margin", "magnitude_offset", "pointing_ratio",
                    "time_scale", "position_scale", "velocity_scale", "dry_mass", "wet_mass", "res_position",
                    "res_velocity")]
                + [("half", ctypes.c_int), ("threads", ctypes.c_int), ("tiles", ctypes.c_int)]
                + [("control_center", ctypes.c_void_p), ("control_half", ctypes.c_void_p)]
                + [("split", ctypes.c_int)])


def _library() -> ctypes.CDLL | None:
    """forward.c compiled for this CPU (c_library.py); None without a working C compiler."""
    global _LIBRARY
    if _LIBRARY is None:
        library = compiled_library(SOURCE.read_text(), "forward", (*native_flags(), "-pthread"), cpu_identity())
        if library is not None:
            library.trc_forward.argtypes = [ctypes.POINTER(_Model), ctypes.c_longlong, ctypes.c_void_p,
                                            ctypes.c_void_p, ctypes.c_float] + [ctypes.c_void_p] * 3
            library.trc_has_half.restype = ctypes.c_int
            library.trc_has_tiles.restype = ctypes.c_int
            library.trc_pack_blocks.restype = ctypes.c_int
            library.trc_products_only.argtypes = [ctypes.POINTER(_Model), ctypes.c_longlong]
        _LIBRARY = library or False
    return _LIBRARY or None


_LIBRARY: ctypes.CDLL | bool | None = None
_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def packed(WT: torch.Tensor, blocks: bool = True) -> torch.Tensor:
    """A transposed weight WT [cols, rows] laid out as forward.c's matvec walks it: each block
    of 64 rows as [cols, 64], then one block of the remaining whole 8s of rows, then the last
    rows % 8, each [cols, width], one after another (flat, contiguous). blocks=False: WT itself,
    flattened."""
    cols, rows = WT.shape
    if not blocks:
        return WT.reshape(-1)
    cuts = [*range(0, rows // 64 * 64 + 1, 64), rows // 8 * 8, rows]
    return torch.cat([WT[:, a:b].reshape(-1) for a, b in zip(cuts, cuts[1:]) if b > a])


def tiles(W: torch.Tensor, order: list[int] | None = None) -> torch.Tensor:
    """A Linear's weight W [rows, cols] as forward.c's AMX B operands, in bfloat16: for each block
    of 16 rows (in `order`, default their own) and each 32 columns, 16 pairs of columns by 16
    rows, each pair adjacent: [ceil(rows/16), ceil(cols/32), 16, 32], zeros past the last row and column."""
    rows, cols = W.shape
    height, width = -(-rows // 16) * 16, -(-cols // 32) * 32
    padded = torch.zeros(height, width, dtype=W.dtype)
    padded[:rows, :cols] = W.detach()
    rows = height
    blocks = padded.view(rows // 16, 16, width)
    if order is not None:
        blocks = blocks[order]
    # [block, row c, input block kb, pair r, e] -> [block, kb, r, c, e]: element (r, 2c + e) of a tile
    # is row c's input 32 kb + 2 r + e
    vnni = blocks.view(rows // 16, 16, width // 32, 16, 2).permute(0, 2, 3, 1, 4)
    return vnni.contiguous().to(torch.bfloat16)


def interleaved(hidden: int) -> list[int]:
    """gate_up's 16-row blocks as forward.c's tiles take them: gate block j, then up block j."""
    return [block for j in range(hidden // 16) for block in (j, hidden // 16 + j)]


class FastForward:
    """forward.c bound to one model: __call__(x0, x*) -> refinements [N_sup, B, N, m], like model(x0, x*).

    Build with FastForward.of(model), which returns None where it does not apply (no C compiler,
    or a compiled terminal map missing for a nonlinear system's feedback).
    """

    def __init__(self, model, library: ctypes.CDLL, terminal: tuple, precision: str = "float32"):
        """terminal: (A_N, G, None) for a linear system, (None, None, address of the compiled x_N);
        precision: the shared net's, as set_inference_precision names it: "float32"; "float16",
        weights in IEEE half precision; "bfloat16", AMX tiles, groups of problems."""
        self._model, self._library = weakref.ref(model), library
        self._matrices, self._terminal = terminal[:2], terminal[2]
        self.half, self.tiles = precision == "float16", precision == "bfloat16"
        net_bytes = sum(p.numel() for p in model.net.parameters()) * (2 if self.half else 4)
        # tiles: every thread takes its own groups of problems, as many threads as PyTorch would use
        self._threads = max(1, min(MAX_THREADS, torch.get_num_threads())) if self.tiles else team_size(net_bytes)
        self._small_net = net_bytes <= TEAM_ABOVE_BYTES
        self._staging = threading.local()  # run_numpy's buffers, by batch size

    def _for_batch(self, B: int, split: bool = True) -> _Model:
        """The prepared model for a batch of B problems. At batch 2 and over (unless split is
        False) the problems are shared out between as many threads as PyTorch may use, each thread
        solving its own alone (forward.c's split; the same numbers): a team's barrier at every
        product costs more than the cache it gains, once there are problems enough for every thread."""
        prepared = self._struct()
        split = split and B > 1 and not self.tiles and torch.get_num_threads() > 1
        prepared.split = int(split)
        prepared.threads = min(MAX_THREADS, torch.get_num_threads()) if split else self._threads
        return prepared

    @property
    def threads(self) -> int:
        """Threads sharing the shared net's products (team_size's choice until set)."""
        return self._threads

    @threads.setter
    def threads(self, count: int) -> None:
        self._threads = count
        if getattr(self, "_prepared", None) is not None:
            self._prepared.threads = count

    @property
    def model(self):
        return self._model()

    def serves(self, batch_size: int) -> bool:
        """Whether predict() runs a batch of batch_size problems here: every batch on AMX tiles
        and with half-precision weights (PyTorch has nothing faster for them: it computes in
        float32 from weights rounded for the call), else up to FAST_FORWARD_MAX_BATCH, or
        SMALL_NET_MAX_BATCH for a net without a team."""
        return self.tiles or self.half or batch_size <= (SMALL_NET_MAX_BATCH if self._small_net
                                                         else FAST_FORWARD_MAX_BATCH)

    @classmethod
    def of(cls, model, precision: str = "float32") -> "FastForward | None":
        """The engine of `model` with its shared net in `precision` (see __init__), made once per
        model (kept outside it, so copies of the model never carry a ctypes library)."""
        engines = _ENGINES.setdefault(model, {})
        if precision not in engines:
            engines[precision] = cls._make(model, precision)
        return engines[precision]

    @classmethod
    def _make(cls, model, precision: str) -> "FastForward | None":
        library = _library()
        if library is None or (precision == "float16" and not library.trc_has_half()):
            return None
        if precision == "bfloat16" and not (library.trc_has_tiles() and model.config.latent_dim % 16 == 0
                                            and model.config.expansion * model.config.latent_dim % 16 == 0):
            return None
        fields = model.c_answer_fields()
        if fields is None:
            return None
        if fields["kind"] == 1:  # the landing's reading computes its own miss (landing_read)
            return cls(model, library, (None, None, None), precision)
        # x_N for the feedback and for halting: A^N and G for a linear system, a compiled C function
        # for an ODE system (None: no C compiler, no fast path)
        terminal = terminal_map(model.problem.system).c_arguments()
        return None if terminal is None else cls(model, library, terminal, precision)

    def _weights(self) -> list[torch.Tensor]:
        """The tensors forward.c reads, looked up afresh (an assignment or a move may replace one),
        straight from the modules' tables: Module.__getattr__ would cost ~10 us a call at batch 1.
        The tables themselves are kept: the architecture's modules never change, nor do their
        dictionaries of parameters (assignment and .to() replace the entries)."""
        if getattr(self, "_tables", None) is None:
            model = self.model
            layers = [model.embed_context, model.embed_controls, model.decode]
            blocks = [layer for b in model.net for layer in (b.gate_up, b.down)]
            error = [] if model.embed_error is None else [model.embed_error]
            self._tables = ([(layer._parameters, "weight") for layer in layers] + [(model._buffers, "z_init")]
                            + [(layer._parameters, "weight") for layer in blocks + error])
            # then the error's weight (None without feedback) and the engine's own A_N and G
            self._tail = ([] if error else [None]) + list(self._matrices)
        return [table[key] for table, key in self._tables] + self._tail

    def _struct(self) -> _Model:
        """The model's sizes and transposed copies of its weights, remade when a weight has changed
        (an optimizer step or load_state_dict bumps a tensor's version; .to() replaces it). At
        batch 1 this check is a twentieth of a small model's answer: it stays a flat tuple."""
        weights = self._weights()
        own = [w for w in weights[:-2] if w is not None]  # the engine's own A_N and G never change
        try:  # map over the unbound methods: half the cost of a loop at batch 1
            stamp = (*map(_VERSION, own), *map(torch.Tensor.data_ptr, own))
        except RuntimeError:  # inference tensors (a model made under inference_mode) keep no version
            stamp = tuple(map(torch.Tensor.data_ptr, own))
        if stamp == getattr(self, "_stamp", None):
            return self._prepared
        for w in weights:
            if w is not None and (w.dtype != torch.float32 or w.device.type != "cpu"):
                raise ValueError("forward.c reads float32 CPU weights")
        blocks = bool(self._library.trc_pack_blocks())
        copy = lambda w: (None if w is None else packed(w.detach().t().contiguous(), blocks) if w.dim() == 2
                          else w.detach().clone())
        self._copies = copies = [copy(w) for w in weights]  # kept alive with self
        address = lambda t: None if t is None else t.data_ptr()
        context, controls, decode, z_init, *rest = copies
        blocks, (error, A_N, G) = rest[:-3], rest[-3:]
        if self.tiles:  # the shared net as AMX tiles, from the weights themselves
            hidden = self.model.config.expansion * self.model.config.latent_dim
            blocks = [tiles(w, interleaved(hidden) if i % 2 == 0 else None) for i, w in enumerate(weights[4:-3])]
            controls, decode = tiles(weights[1]), tiles(weights[2])  # forward.c reads these as tiles too
            self._copies += [*blocks, controls, decode]  # kept alive with self
        elif self.half:
            blocks = [block.half() for block in blocks]
            self._copies += blocks  # kept alive with self
        self._gate_up = (ctypes.c_void_p * (len(blocks) // 2))(*(address(w) for w in blocks[0::2]))
        self._down = (ctypes.c_void_p * (len(blocks) // 2))(*(address(w) for w in blocks[1::2]))
        model, config = self.model, self.model.config
        N, m = model.control_shape
        self._prepared = _Model(
            n=model.problem.system.state_dim, N_m=N * m, D=config.latent_dim, H=config.expansion * config.latent_dim,
            layers=config.num_layers, inner=config.num_inner_cycles, outer=config.num_outer_cycles,
            steps=config.num_supervision_steps, feedback=int(config.error_feedback),
            state_scale=config.state_scale, eps=torch.finfo(torch.float32).eps,
            embed_context=address(context), embed_controls=address(controls), embed_error=address(error),
            gate_up=ctypes.addressof(self._gate_up), down=ctypes.addressof(self._down), decode=address(decode),
            z_init=address(z_init), A_N=address(A_N), G=address(G), terminal=self._terminal,
            half=int(self.half), threads=self.threads, tiles=int(self.tiles), **self._answer_fields(model))
        self._stamp = stamp
        return self._prepared

    def _answer_fields(self, model) -> dict:
        """model.c_answer_fields(), its arrays (a task's own bounds for each control) as the
        addresses of float32 copies kept alive with self."""
        fields = dict(model.c_answer_fields())
        for name in ("control_center", "control_half"):
            if fields.get(name) is not None:
                self._copies.append(torch.as_tensor(np.asarray(fields[name], np.float32)).contiguous())
                fields[name] = self._copies[-1].data_ptr()
        return fields

    def __call__(self, initial_states: torch.Tensor, target_states: torch.Tensor) -> torch.Tensor:
        """[B, n], [B, n] float32 CPU tensors -> refinements [N_sup, B, N, m] float32, as model(x0, x*)."""
        return self.run(initial_states, target_states)[0]

    def run_numpy(self, initial_states: np.ndarray, target_states: np.ndarray) -> np.ndarray:
        """__call__ for numpy [B, n] (checked by the caller) -> refinements [N_sup, B, N, m] float64,
        without a tensor in between: at batch 1 PyTorch's conversions and inference mode cost a
        fifth of a small model's answer."""
        B = len(initial_states)
        staging = self._staging.__dict__.get(B) or self._new_staging(B)
        states, out, start, at, size, shape = staging
        states[0], states[1] = initial_states, target_states
        status = self._library.trc_forward(ctypes.byref(self._for_batch(B)), B, start, start + states[0].nbytes, 0.0,
                                           at, at + 4 * size, at + 4 * (size + B))
        if status:
            raise RuntimeError(f"forward.c failed (status {status})")
        return out[:size].reshape(shape).astype(np.float64)

    def _new_staging(self, B: int) -> tuple:
        """run_numpy's float32 buffers for batch B, kept per thread (two threads may answer at
        once): the inputs [2, B, n] and the outputs (refinements, then the unused steps and
        errors), with their addresses. Each address asked of numpy costs ~0.8 us, and a fresh pair
        of arrays another microsecond: together a twentieth of a small model's answer."""
        model = self.model
        steps, answer = model.config.num_supervision_steps, model.answer_shape
        size = steps * B * math.prod(answer)
        states = np.empty((2, B, model.problem.system.state_dim), np.float32)
        out = np.empty(size + 2 * B, np.float32)
        staging = (states, out, states.ctypes.data, out.ctypes.data, size, (steps, B, *answer))
        if B <= 16 and len(self._staging.__dict__) < 64:  # small ones recur; large ones cost nothing
            self._staging.__dict__[B] = staging
        return staging

    def products_only(self, batch_size: int = 1) -> None:
        """The matrix products of batch_size answers and nothing else, on these kernels (in this
        engine's precision): the floor benchmarks/performance.py times the whole forward against."""
        if self._library.trc_products_only(ctypes.byref(self._for_batch(batch_size, split=False)), batch_size):
            raise MemoryError("forward.c: out of memory")

    def run(self, initial_states: torch.Tensor, target_states: torch.Tensor, tolerance: float = 0.0):
        """(refinements [N_sup, B, N, m], refinements used [B], terminal errors [B]).

        tolerance > 0: halting as in model.predict_anytime (a problem stops after the first
        supervision step whose answer misses x* by less; its later refinements repeat that answer).
        """
        x0, xt = initial_states.contiguous(), target_states.contiguous()
        B = x0.shape[0]
        refinements = torch.empty(self.model.config.num_supervision_steps, B, *self.model.answer_shape)
        used, errors = torch.zeros(B, dtype=torch.int32), torch.zeros(B)
        model = self._for_batch(B)
        status = self._library.trc_forward(ctypes.byref(model), B, x0.data_ptr(), xt.data_ptr(), float(tolerance),
                                           refinements.data_ptr(), used.data_ptr(), errors.data_ptr())
        if status:
            raise RuntimeError(f"forward.c failed (status {status})")
        return refinements, used, errors


def pytorch_only(predict):
    """predict with forward.c switched off: PyTorch at every batch size and precision (for comparisons)."""
    def run(*args, **kwargs):
        global ENABLED
        saved, ENABLED = ENABLED, False
        try:
            return predict(*args, **kwargs)
        finally:
            ENABLED = saved
    return run


def paths() -> dict:
    """What the fast paths do on this CPU, detected from its flags (c_library.cpu_flags), never its
    name: `trc info` prints it. Keys: cpu, flags (the ones that choose a path), target (what the C
    is compiled for), compiled, float32, float16, bfloat16, routing."""
    from .c_library import PATH_FLAGS, bfloat16_units, cpu_flags, target
    from ..evaluate import hardware
    flags = cpu_flags()
    library = _library() if ENABLED else None
    blocks = bool(library and library.trc_pack_blocks())
    return {
        "cpu": hardware()["cpu"],
        "flags": " ".join(f for f in PATH_FLAGS if f in flags) or f"(none of {', '.join(PATH_FLAGS)})",
        "target": f"-march={target()}" + ("" if target() == "native" else " ($TRC_MARCH)"),
        "compiled": "yes" if library else "no (no C compiler, or switched off): PyTorch everywhere",
        "float32": ("forward.c, rows in blocks of 64 (AVX2 and FMA)" if blocks else
                    "forward.c, plain loops (the target has no AVX2 with FMA)") if library else "PyTorch",
        "float16": ("forward.c with half-precision weights (F16C)" if library and library.trc_has_half()
                    else "PyTorch on weights rounded to half precision (no F16C in the target)"),
        "bfloat16": ("forward.c on AMX tiles, every batch" if library and library.trc_has_tiles() else
                     "PyTorch under autocast" + ("" if bfloat16_units() else
                                                 ": this CPU has no bfloat16 units, so slower than float32")),
        "routing": (f"batch 1 on one thread (a team of {TEAM_SIZE} for a net over {TEAM_ABOVE_BYTES // 1024} KiB); "
                    f"batch 2 and over: problems shared between {min(MAX_THREADS, torch.get_num_threads())} "
                    f"threads; in float32, PyTorch past batch {SMALL_NET_MAX_BATCH:,} ({FAST_FORWARD_MAX_BATCH} for a "
                    f"net over {TEAM_ABOVE_BYTES // 1024} KiB)") if library else "PyTorch at every batch",
    }
