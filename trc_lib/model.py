"""TinyRecursiveControl: a tiny recursive network that writes and refines a control sequence.

It follows the Tiny Recursive Model (Jolicoeur-Martineau 2025, "Less is More: Recursive
Reasoning with Tiny Networks"), with the answer y being the control sequence itself:

    context x = embed(x_0, x*)
    repeat N_sup supervision steps (training: a loss after each, the carry (y, z)
                                    detached in between):
        repeat N_out recursions (all but the last without gradient):
            u = c + h tanh(y / h)                                # within the bounds by construction
            e = x_N(u) - x*                                      # error feedback: simulated miss
            repeat N_in times:  z <- net(x + embed(u) + embed(e) + z)
            y <- y + decode(net(embed(u) + z))

c and h are the center and half-width of each control's bounds (u_max tanh(y / u_max) for
|u| <= u_max). `net` is one small shared network (two post-norm RMSNorm SwiGLU blocks, no biases). The
initial y is zero controls and the initial z a fixed random vector, neither learned.
Every y is a complete control sequence; the answer after each supervision step is returned,
so the refinement can be scored and plotted step by step.
TRM's learned halting head (its Q-head) is left out: the simulator knows each answer's miss
exactly, so predict(..., tolerance=t) stops refining a problem once its miss is below t.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fast import forward as fast_forward
from .tasks import BUILT_IN, task_from_dict
from .terminal_map import system_key, terminal_map, terminal_state

INFERENCE_PRECISIONS = ("float32", "bfloat16", "float16")
MODEL_SIZES = {"small": 96, "medium": 208, "large": 464}  # latent_dim: ~114K, ~527K, ~2.6M parameters
MISS_RESOLUTION = 0.1  # δ of miss_loss: the miss under which it is the squared miss (the tasks' success radius)


def _default_task():
    """The guide's task: the double integrator's minimum-energy transfer."""
    return BUILT_IN["double_integrator"]()


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint.

    latent_dim: width D of the latent z and of the shared net; expansion: SwiGLU hidden width
    is expansion * D; num_layers: blocks in the shared net; num_inner_cycles: N_in, latent
    updates per recursion; num_outer_cycles: N_out, recursions per supervision step;
    num_supervision_steps: N_sup; error_feedback: feed the simulated terminal error;
    state_scale: typical |state| (inputs are divided by it); problem: Task.to_dict()
    (or RocketLanding.to_dict()); scales: typical size of each physical quantity, for a problem
    whose states mix units (the rocket landing: position m, velocity m/s, time s).
    """

    latent_dim: int = MODEL_SIZES["medium"]
    expansion: int = 2
    num_layers: int = 2
    num_inner_cycles: int = 3
    num_outer_cycles: int = 2
    num_supervision_steps: int = 3
    error_feedback: bool = True
    state_scale: float = 2.0
    problem: dict = field(default_factory=lambda: _default_task().to_dict())
    scales: dict = field(default_factory=dict)  # per physical quantity, where one scale will not do (landing_model.py)

    @property
    def num_refinements(self) -> int:
        """Answers produced per forward pass: one per supervision step."""
        return self.num_supervision_steps


def _all_finite(array: np.ndarray) -> bool:
    """Whether every entry is finite. A few entries in Python floats: at batch 1 numpy's isfinite
    and all cost ~2 us a call for two arrays, a fiftieth of a small model's answer."""
    if array.size <= 16:
        return all(map(math.isfinite, array.ravel().tolist()))
    return bool(np.isfinite(array).all())


def check_states(initial_states, target_states, state_dim: int):
    """Both as float64 arrays [B, state_dim] with the same B and finite values, or ValueError."""
    arrays = []
    for name, value in (("initial_states", initial_states), ("target_states", target_states)):
        array = np.asarray(value, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != state_dim:
            raise ValueError(f"{name} must have shape [B, {state_dim}], got {list(array.shape)} "
                             f"(one problem is [1, {state_dim}])")
        if not _all_finite(array):
            raise ValueError(f"{name} contains NaN or inf")
        arrays.append(array)
    if len(arrays[0]) != len(arrays[1]):
        raise ValueError(f"initial_states and target_states hold {len(arrays[0])} and {len(arrays[1])} problems")
    return arrays


@dataclass
class AnytimeAnswer:
    """predict_anytime's result (numpy): controls [B, N, m]; refinements [B], the supervision
    steps each problem used; terminal_errors [B], ||x_N - x*|| of its answer (exact dynamics)."""

    controls: np.ndarray
    refinements: np.ndarray
    terminal_errors: np.ndarray


class SwiGLUBlock(nn.Module):
    """h <- RMSNorm(h + W_down (silu(W_gate h) * W_up h)); post-norm, no biases, as in TRM."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return F.rms_norm(h + self.down(F.silu(gate) * up), h.shape[-1:])


def _drop_matrices_of_older_checkpoints(module, state_dict, prefix, *args):
    """Checkpoints of linear-system models written before the terminal map moved out of the model
    stored A^N and G as buffers: the same matrices the system makes now, so they are dropped."""
    for name in ("A_N", "G"):
        state_dict.pop(prefix + name, None)


class TinyRecursiveControl(nn.Module):
    """Maps (initial_states [B, n], target_states [B, n]) to control sequences [B, N, m]."""

    has_c_forward = True  # fast/forward.py's forward.c runs it on the CPU at small batches

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        self.problem = task_from_dict(config.problem)
        system = self.problem.system
        n, m, N, D = system.state_dim, system.control_dim, system.num_steps, config.latent_dim
        self.control_shape = self.answer_shape = (N, m)  # answer_shape: one refinement's, as forward() stacks them
        self.embed_context = nn.Linear(2 * n, D, bias=False)
        self.embed_controls = nn.Linear(N * m, D, bias=False)
        self.embed_error = nn.Linear(n, D, bias=False) if config.error_feedback else None
        self.net = nn.Sequential(*[SwiGLUBlock(D, config.expansion * D) for _ in range(config.num_layers)])
        self.decode = nn.Linear(D, N * m, bias=False)
        nn.init.zeros_(self.decode.weight)  # the first refinements start from zero controls
        # x_N, the dynamics behind the error feedback: the system's own terminal map, held by key (a
        # compiled one never travels with copies of the model); built here rather than mid-forward
        self._terminal_key = system_key(system)
        terminal_map(system)
        self.register_load_state_dict_pre_hook(_drop_matrices_of_older_checkpoints)
        z_init = torch.nn.init.trunc_normal_(torch.empty(D), std=1.0, generator=torch.Generator().manual_seed(0))
        self.register_buffer("z_init", z_init)

    # ---- the guide's constructors -------------------------------------------------------
    @classmethod
    def create(cls, size: str = "medium", problem=None, **overrides):
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {list(MODEL_SIZES)}")
        problem = problem or _default_task()
        overrides.setdefault("latent_dim", MODEL_SIZES[size])
        return cls(ModelConfig(problem=problem.to_dict(), **overrides))

    @classmethod
    def create_small(cls, **kw):
        return cls.create("small", **kw)

    @classmethod
    def create_medium(cls, **kw):
        return cls.create("medium", **kw)

    @classmethod
    def create_large(cls, **kw):
        return cls.create("large", **kw)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- the recursion --------------------------------------------------------------------
    @property
    def control_bound(self) -> float:
        """u_max of a task whose controls all lie in [-u_max, u_max] (ValueError for another)."""
        return self.problem.control_bound

    def control_box(self, like: torch.Tensor):
        """(center c, half-width h) of the controls' bounds: floats for one symmetric bound, else
        tensors [N*m] like `like` (each control's, repeated over the N intervals)."""
        if self.problem.symmetric_bounds:
            return 0.0, self.problem.control_bound
        key = (like.device, like.dtype)
        boxes = self.__dict__.setdefault("_control_boxes", {})
        if key not in boxes:
            limits, N = self.problem.control_limits, self.control_shape[0]
            center, half = limits.mean(axis=1), (limits[:, 1] - limits[:, 0]) / 2
            boxes[key] = tuple(torch.as_tensor(np.tile(v, N), device=like.device, dtype=like.dtype)
                               for v in (center, half))
        return boxes[key]

    def controls(self, y: torch.Tensor) -> torch.Tensor:
        """The answer y [B, N*m] as bounded controls [B, N, m]: c + h tanh(y / h)."""
        center, half = self.control_box(y)
        return (center + half * torch.tanh(y / half)).view(-1, *self.control_shape)

    def control_features(self, controls: torch.Tensor) -> torch.Tensor:
        """Controls [B, N, m] as the net reads them, [B, N*m]: (u - c) / h, within [-1, 1]."""
        center, half = self.control_box(controls)
        return (controls.flatten(1) - center) / half

    def terminal_states(self, initial_states: torch.Tensor, controls: torch.Tensor) -> torch.Tensor:
        """x_N through the task's own dynamics, exact and differentiable. [B, n], [B, N, m] -> [B, n].

        The system's terminal map (terminal_map.py): for a linear system A^N x_0 + G u, one matrix
        product; for an ODE system its own integrator (every RK4 substep, the oracle's and the
        scorer's), compiled to C with its derivative: a few microseconds per problem instead of the
        thousands of tensor operations of an eager rollout. Under bfloat16 autocast the miss stays
        in float32.
        """
        with torch.autocast(initial_states.device.type, enabled=False):
            return terminal_state(initial_states.float(), controls.float(), self.problem.system, self._terminal_key)

    # ---- what training asks of an answer (the landing model answers its own way) ---------------
    def imitation_loss(self, answer, optimal_controls) -> torch.Tensor:
        """Mean squared error of controls [B, N, m], in units of each control's half-width h."""
        _, half = self.control_box(answer)
        return torch.mean(((answer - optimal_controls).flatten(1) / half) ** 2)

    def miss_loss(self, initial_states, target_states, answer) -> torch.Tensor:
        """Mean over the batch of the terminal miss m = ||x_N - x*|| through the exact dynamics, as
        δ² log(1 + m²/δ²) / state_scale² with δ = MISS_RESOLUTION: the squared miss m²/state_scale²
        while m << δ, logarithmic far from it.

        Why not the plain square: on a chaotic task (the pendulum, where dx_N/du has singular values
        of 13-260 at the optimum, median 26) an answer outside the target's basin misses by radians,
        and its squared miss, with gradients as large as the miss times dx_N/du, would outweigh
        every answer that is nearly there; under the logarithm a far miss pulls with 2/m, a near one with
        2m/δ², so the training spends itself on the answers it can land."""
        miss = self.scored_miss(self.terminal_states(initial_states, answer), target_states)
        delta = MISS_RESOLUTION
        return torch.mean(delta ** 2 * torch.log1p(miss.square().sum(-1) / delta ** 2)) / self.config.state_scale ** 2

    def scored_miss(self, final_states: torch.Tensor, target_states: torch.Tensor) -> torch.Tensor:
        """x_N - x* [B, k] on the components the task constrains (all of them when it constrains none)."""
        miss = final_states - target_states
        indices = self.problem.terminal_indices
        return miss if len(indices) in (0, miss.shape[-1]) else miss[:, list(indices)]

    def terminal_errors(self, initial_states, target_states, answer) -> torch.Tensor:
        """[B]: ||x_N - x*|| through the exact dynamics (on the constrained components)."""
        return torch.linalg.vector_norm(self.scored_miss(self.terminal_states(initial_states, answer), target_states),
                                        dim=-1)

    def context(self, initial_states: torch.Tensor, target_states: torch.Tensor) -> torch.Tensor:
        return self.embed_context(torch.cat([initial_states, target_states], dim=-1) / self.config.state_scale)

    def initial_carry(self, batch_size: int):
        """(y, z) before the first recursion: zero controls and the fixed latent z_init."""
        N, m = self.control_shape
        y = self.z_init.new_zeros(batch_size, N * m)
        return y, self.z_init.expand(batch_size, -1)

    def read_answer(self, y, initial_states, target_states, with_miss: bool = True):
        """What a recursion sees of its answer y: (the answer, its normalized features [B, N*m],
        the normalized simulated miss [B, n] or None). Here the answer is the controls [B, N, m];
        a model of another problem (landing_model.py) reads its own answer here."""
        u = self.controls(y)
        miss = None
        if with_miss and self.embed_error is not None:
            miss = (self.terminal_states(initial_states, u) - target_states) / self.config.state_scale
        return u, self.control_features(u), miss

    def recursion(self, context, initial_states, target_states, y, z):
        """One recursion: N_in latent updates, then one update of the answer. Returns (y, z)."""
        _, features, miss = self.read_answer(y, initial_states, target_states)
        answer_embedding = self.embed_controls(features)
        question = context + answer_embedding
        if miss is not None:
            question = question + self.embed_error(miss)
        for _ in range(self.config.num_inner_cycles):
            z = self.net(question + z)
        y = y + self.decode(self.net(answer_embedding + z))
        return y, z

    def supervision_step(self, initial_states, target_states, carry):
        """N_out recursions; gradient flows through the last one only (TRM's deep recursion).

        Returns (carry, controls [B, N, m]) where controls come from the last recursion.
        """
        context = self.context(initial_states, target_states)
        y, z = carry
        with torch.no_grad():
            for _ in range(self.config.num_outer_cycles - 1):
                y, z = self.recursion(context, initial_states, target_states, y, z)
        y, z = self.recursion(context, initial_states, target_states, y, z)
        return (y, z), self.read_answer(y, initial_states, target_states, with_miss=False)[0]

    def forward(self, initial_states: torch.Tensor, target_states: torch.Tensor,
                num_supervision_steps: int | None = None) -> torch.Tensor:
        """The answer after every supervision step: [N_sup, B, N, m]; the last is the final answer.

        These are the refinements: each is the answer that training supervises, after N_out
        recursions (the recursions inside a step are the model's own reasoning and are not
        trained to be answers). Pass num_supervision_steps to run more or fewer than in training.
        """
        steps = self.config.num_supervision_steps if num_supervision_steps is None else num_supervision_steps
        carry = self.initial_carry(initial_states.shape[0])  # shape, not len(): keeps the batch symbolic for export
        refinements = []
        for _ in range(steps):
            carry, controls = self.supervision_step(initial_states, target_states, carry)
            refinements.append(controls)
        return torch.stack(refinements)

    def compile_inference(self) -> "TinyRecursiveControl":
        """Use torch.compile for predict(): about 2x faster at batch 1 on a CPU, but the first
        call for each new batch shape compiles (tens of seconds). Returns self."""
        self._compiled_forward = torch.compile(self.forward)
        return self

    def set_inference_precision(self, precision: str = "float32") -> "TinyRecursiveControl":
        """Run predict() in "float32" (default), "bfloat16" (matrix products under autocast) or
        "float16" (the shared net's weights rounded to IEEE half precision, arithmetic in float32).

        bfloat16 pays off at large batches on hardware with bfloat16 matrix units (Intel AMX,
        recent GPUs), at the price of a larger terminal error (8 significant bits per product;
        the answers' accuracy is measured in benchmarks/performance.py). On a CPU with AMX it runs
        forward.c's tiles (fast/forward.py) at every batch size: the shared net, the answer's
        embedding and the decoder in bfloat16, all else in float32. Elsewhere PyTorch runs it under
        autocast, which without bfloat16 units is slower than float32. The error feedback stays in float32.

        float16 is for batch 1 on a CPU: forward.c streams the shared net's weights at half the
        bytes, which is what bounds a medium or large model there once its weights outgrow the
        core's L2 cache (F16C instructions; elsewhere, and at large batches, PyTorch computes the
        same numbers from weights rounded in place for the call). The answers' accuracy is
        measured, not assumed (benchmarks/landing.py). Training is unaffected. Returns self.
        """
        if precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {list(INFERENCE_PRECISIONS)}")
        self._inference_precision = precision
        return self

    # ---- numpy in, numpy out --------------------------------------------------------------
    def _inference_inputs(self, initial_states, target_states, device):
        """Checked numpy [B, n] inputs as float32 tensors on `device` (default: the model's), which
        the model moves to; and the autocast context of the inference precision."""
        from .device import resolve_device
        initial_states, target_states = check_states(initial_states, target_states, self.problem.system.state_dim)
        here = self.z_init.device  # every tensor of the model lives together
        device = here if device is None else resolve_device(device)
        if here != device:
            self.to(device)
        as_tensor = lambda a: torch.as_tensor(a.astype(np.float32), device=device)
        precision = getattr(self, "_inference_precision", "float32")
        if precision == "bfloat16":
            autocast = torch.autocast(device.type, dtype=torch.bfloat16)
        elif precision == "float16":
            autocast = self._net_weights_in_half()
        else:  # nothing to enter at every call (a batch-1 answer takes a fraction of a millisecond)
            autocast = contextlib.nullcontext()
        return as_tensor(initial_states), as_tensor(target_states), autocast

    def predict_refinements(self, initial_states, target_states, device=None) -> np.ndarray:
        """[N_sup, B, N, m] numpy float64 (the answer after each supervision step) from numpy [B, n].

        device: run there (the model moves there and stays); default: where the model is.
        """
        # __dict__, not hasattr: a missing attribute costs nn.Module's __getattr__ an exception, ~1 us
        if device is None and "_compiled_forward" not in self.__dict__:
            fast = self._fast_forward_for(len(initial_states) if hasattr(initial_states, "__len__") else None)
            if fast is not None:  # numpy straight into forward.c: no tensor, no mode, no train/eval switch
                x0, xt = check_states(initial_states, target_states, self.problem.system.state_dim)
                return fast.run_numpy(x0, xt)
        return self._predict_refinements_torch(initial_states, target_states, device)

    def _fast_forward_for(self, batch_size: int | None):
        """forward.c for a batch of batch_size problems on the model's own device where it is the
        faster path (a C compiler at hand, the CPU; float32 or float16 weights at small batches,
        bfloat16 at any batch where the CPU has AMX); None elsewhere."""
        precision = self.__dict__.get("_inference_precision", "float32")
        if batch_size is None or not fast_forward.ENABLED or self._buffers["z_init"].device.type != "cpu":
            return None
        if precision != "bfloat16" and batch_size > fast_forward.FAST_FORWARD_MAX_BATCH:
            return None
        return fast_forward.FastForward.of(self, precision)  # bfloat16: AMX tiles at any batch, where the CPU has them

    @torch.no_grad()  # not inference_mode: torch.compile's guards fail on the feedback's matrices inside it
    def _predict_refinements_torch(self, initial_states, target_states, device=None) -> np.ndarray:
        """predict_refinements through PyTorch (forward.c where _fast_forward says so)."""
        x0, xt, autocast = self._inference_inputs(initial_states, target_states, device)
        fast = None if "_compiled_forward" in self.__dict__ else self._fast_forward(x0)
        if fast is not None:  # no train/eval switch: forward.c reads the weights only (a switch costs as much)
            return fast(x0, xt).double().numpy()
        was_training = self.training
        self.eval()
        forward = self.__dict__.get("_compiled_forward") or self
        with autocast:
            out = forward(x0, xt)
        self.train(was_training)
        return out.double().cpu().numpy()

    # ---- what export.py asks of a model -------------------------------------------------------
    def feedback_exportable(self) -> bool:
        """Whether the error feedback is ONNX operators (a matrix product), not a call into C."""
        from .terminal_map import terminal_map
        return terminal_map(self.problem.system).onnx_exportable

    def example_states(self, rng: np.random.Generator, count: int):
        """(initial_states, target_states) [count, n] float32 for export's parity check."""
        scale = self.config.state_scale
        n = self.problem.system.state_dim
        return tuple(rng.uniform(-scale, scale, (count, n)).astype(np.float32) for _ in range(2))

    def answer_scale(self) -> float | np.ndarray:
        """What an answer's round-off is measured against: max(1, the largest |bound|)."""
        return max(1.0, float(np.abs(self.problem.control_limits).max()))

    export_tolerance = 1e-5  # float32 round-off, relative to answer_scale, that export accepts

    @staticmethod
    def answer_of(last_refinement: np.ndarray):
        """predict's answer from the last refinement [B, N, m]: the controls themselves."""
        return last_refinement

    def c_answer_fields(self) -> dict | None:
        """How forward.c reads this model's answer (its trc_model fields): kind 0, u_max tanh for
        one symmetric bound, else each control's center and half-width [N m]; None where it cannot
        (a miss scored on some components only: PyTorch runs that)."""
        task = self.problem
        if len(task.terminal_indices) not in (0, task.state_dim):
            return None
        N, m = self.control_shape
        fields = {"kind": 0, "y_size": N * m, "a_size": N * m}
        if task.symmetric_bounds:
            return {**fields, "u_max": self.control_bound}
        limits = task.control_limits
        return {**fields, "u_max": 1.0, "control_center": np.tile(limits.mean(axis=1), N),
                "control_half": np.tile((limits[:, 1] - limits[:, 0]) / 2, N)}

    def _fast_forward(self, initial_states: torch.Tensor):
        """forward.c (fast/forward.py) where it is the faster path: float32 (or float16 weights) on
        the CPU, small batches, a C compiler at hand; None elsewhere."""
        return None if initial_states.device.type != "cpu" else self._fast_forward_for(initial_states.shape[0])

    @contextlib.contextmanager
    def _net_weights_in_half(self):
        """The shared net's weights rounded to IEEE half precision for the duration (the numbers
        forward.c computes with under "float16"), restored after."""
        weights = [getattr(block, name).weight for block in self.net for name in ("gate_up", "down")]
        saved = [w.detach().clone() for w in weights]
        with torch.no_grad():
            for w in weights:
                w.copy_(w.half().float())
        try:
            yield
        finally:
            with torch.no_grad():
                for w, original in zip(weights, saved):
                    w.copy_(original)

    @torch.inference_mode()
    def predict_anytime(self, initial_states, target_states, tolerance: float,
                        max_refinements: int | None = None, device=None) -> "AnytimeAnswer":
        """Refine each problem only until its answer reaches the target: an anytime answer.

        After every supervision step the answer's terminal error ||x_N(u) - x*|| is simulated
        through the exact dynamics (the model's own terminal map, the one its feedback uses);
        problems within `tolerance` stop there and leave the batch, the rest go on, up to
        max_refinements steps (default: the N_sup it was trained with). TRM learns a halting head
        to guess this; here the simulator knows it, for one rollout per step.
        """
        if not (tolerance > 0 and np.isfinite(tolerance)):
            raise ValueError(f"tolerance must be a positive number, got {tolerance}")
        steps = self.config.num_supervision_steps if max_refinements is None else max_refinements
        if int(steps) != steps or steps < 1:
            raise ValueError(f"max_refinements must be a positive integer, got {max_refinements}")
        x0, xt, autocast = self._inference_inputs(initial_states, target_states, device)
        fast = self._fast_forward(x0) if steps == self.config.num_supervision_steps else None
        if fast is not None:
            refinements, used, errors = fast.run(x0, xt, tolerance)
            return AnytimeAnswer(refinements[-1].double().numpy(), used.numpy().astype(np.int64),
                                 errors.double().numpy())
        was_training = self.training
        self.eval()
        B = x0.shape[0]
        controls = torch.zeros(B, *self.control_shape, device=x0.device)
        refinements = torch.zeros(B, dtype=torch.long, device=x0.device)
        errors = torch.zeros(B, device=x0.device)
        active = torch.arange(B, device=x0.device)  # rows still refining
        carry = self.initial_carry(B)
        with autocast:
            for step in range(int(steps)):
                carry, answer = self.supervision_step(x0[active], xt[active], carry)
                miss = self.terminal_errors(x0[active], xt[active], answer)
                controls[active], refinements[active], errors[active] = answer.float(), step + 1, miss
                going_on = miss >= tolerance
                active, carry = active[going_on], tuple(c[going_on] for c in carry)
                if active.numel() == 0:
                    break
        self.train(was_training)
        as_numpy = lambda t: t.cpu().numpy()
        return AnytimeAnswer(as_numpy(controls).astype(np.float64), as_numpy(refinements),
                             as_numpy(errors).astype(np.float64))

    def predict(self, initial_states, target_states, device=None, tolerance: float | None = None) -> np.ndarray:
        """The answer: controls [B, N, m] (numpy) for initial_states, target_states [B, n] (numpy).

        tolerance: stop refining each problem once its simulated terminal error is below it
        (predict_anytime; it also reports how many refinements each problem used).
        """
        if tolerance is not None:
            return self.predict_anytime(initial_states, target_states, tolerance, device=device).controls
        return self.predict_refinements(initial_states, target_states, device)[-1]

    def config_dict(self) -> dict:
        return asdict(self.config)
