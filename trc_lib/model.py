"""TinyRecursiveControl: a tiny recursive network that writes and refines a control sequence.

It follows the Tiny Recursive Model (Jolicoeur-Martineau 2025, "Less is More: Recursive
Reasoning with Tiny Networks"), with the answer y being the control sequence itself:

    context x = embed(x_0, x*)
    repeat N_sup supervision steps (training: a loss after each, the carry (y, z)
                                    detached in between):
        repeat N_out recursions (TRM's T; all but the last without gradient):
            u = c + h tanh(y / h)                                # within the bounds by construction
            e = x_N(u) - x*                                      # error feedback: simulated miss
            repeat N_in times (TRM's n):  z <- net(x + embed(u) + embed(e) + z)
            y <- y + decode(net(embed(u) + z))

c and h are the center and half-width of each control's bounds (u_max tanh(y / u_max) for
|u| <= u_max). `net` is one small shared network (two post-norm RMSNorm SwiGLU blocks, no biases). The
initial y is zero controls and the initial z a fixed random vector, neither learned.
Every y is a complete control sequence; the answer after each supervision step is returned,
so the refinement can be scored and plotted step by step.
TRM's learned halting head (its Q-head) is left out: the simulator knows each answer's miss
exactly, so predict(..., tolerance=t) stops refining a problem once its miss is below t.
Answering with a trained model (predict, halting, precisions, the C path) is inference.py.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .inference import Inference
from .tasks import BUILT_IN, import_reference, task_from_dict
from .terminal_map import system_key, terminal_map, terminal_state

MODEL_SIZES = {"small": 96, "medium": 208, "large": 464}  # latent_dim: ~114K, ~527K, ~2.6M parameters
MISS_RESOLUTION = 0.1  # δ of miss_loss: the miss under which it is the squared miss (the tasks' success radius)


def model_class(problem) -> type:
    """The network that answers `problem`: its task's own (Task.model_class, a reference) or this
    module's TinyRecursiveControl."""
    reference = getattr(problem, "model_class", None)
    return TinyRecursiveControl if reference is None else import_reference(reference)


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
    state_scale: typical |state| (inputs are divided by it); problem: the task's to_dict();
    scales: typical size of each physical quantity, for a task's own model whose states mix
    units (Task.new_model sets them).
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
    scales: dict = field(default_factory=dict)  # per physical quantity, where one scale will not do

    @property
    def num_refinements(self) -> int:
        """Answers produced per forward pass: one per supervision step."""
        return self.num_supervision_steps


class SwiGLUBlock(nn.Module):
    """h <- RMSNorm(h + W_down (silu(W_gate h) * W_up h)); post-norm, no biases, as in TRM."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(h).chunk(2, dim=-1)
        return F.rms_norm(h + self.down(F.silu(gate) * up), h.shape[-1:])


def check_fits_in_memory(config: ModelConfig, n: int, answer_size: int, copies: int = 4) -> None:
    """ValueError naming latent_dim, before anything is allocated, for a model whose float32
    parameters, held `copies` times in training (weights, gradients, Adam's two moments), would
    not fit in this machine's memory."""
    D, H = config.latent_dim, config.expansion * config.latent_dim
    parameters = D * (3 * n + 2 * answer_size) + config.num_layers * 3 * D * H
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform reports it
        return
    if copies * 4 * parameters > available:
        raise ValueError(f"latent_dim {D}: the model would have {parameters:,} parameters ({copies * 4 * parameters / 2**30:,.0f} "
                         f"GiB to train in float32), more than this machine's {available / 2**30:,.0f} GiB")


def _drop_matrices_of_older_checkpoints(module, state_dict, prefix, *args):
    """Checkpoints of linear-system models written before the terminal map moved out of the model
    stored A^N and G as buffers: the same matrices the system makes now, so they are dropped."""
    for name in ("A_N", "G"):
        state_dict.pop(prefix + name, None)


class TinyRecursiveControl(Inference, nn.Module):
    """Maps (initial_states [B, n], target_states [B, n]) to control sequences [B, N, m]."""

    has_c_forward = True  # fast/forward.py's forward.c runs it on the CPU (FastForward.serves says at which batches)

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        self.problem = task_from_dict(config.problem)
        system = self.problem.system
        n, m, N, D = system.state_dim, system.control_dim, system.num_steps, config.latent_dim
        check_fits_in_memory(config, n, N * m)
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
    def for_training_set(cls, size: str, train_set, **overrides):
        """An untrained model of `size` for the training set's task, its inputs scaled by the data:
        one scale for every state, the largest |x_0| or |x*|."""
        states = np.concatenate([train_set.initial_states, train_set.target_states])
        return cls.create(size, problem=train_set.problem, state_scale=float(np.abs(states).max()), **overrides)

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

    # ---- what training asks of an answer (a task's own model, Task.model_class, answers its own way)
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
        a task's own model (Task.model_class) reads its own answer here."""
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

    def config_dict(self) -> dict:
        return asdict(self.config)
