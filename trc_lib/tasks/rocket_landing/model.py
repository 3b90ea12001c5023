"""TinyRecursiveControl for the rocket landing: three controls per step, the thrust annulus by
construction, and the flight time as part of the answer.

The recursion is the one of model.py, unchanged; what differs is how the answer y is read
(read_answer). y holds 4 numbers per interval and one for the flight time:

    t_f     = t_ref exp(2 tanh(y_t / 2))                    (between t_ref / 7.4 and 7.4 t_ref)
    d_k     = direction of (y_k[0:3] + e_z)                 (the zero answer points straight up;
                                                             with a pointing cone, the tilt from
                                                             vertical is scaled into it)
    |T_k|   = lo_k + (hi - lo_k) sigmoid(y_k[3] + b)        (b: the zero answer thrusts near hover)
    T_k     = |T_k| d_k

the vector generalization of u_max tanh(y / u_max). The bounds follow the interval semantics of
problem.py: hi = rho_2 at the interval's start; lo_k the least thrust whose value at the
interval's end, after the mass has fallen by exp(-alpha |T_k| dt / m_k), is still rho_1:
lo_k = rho_1 exp(alpha lo_k dt / m_k), solved by Newton's method. Both bounds keep a relative margin of MARGIN, so float32
rounding can never cross them: the thrust bounds hold exactly for every answer the network can
give. The mass m_k comes from the same scan, which also integrates r and v exactly: the
simulated miss at the landing site is the error feedback.

Inputs and outputs are normalized per physical quantity: positions by scales['position'] (m),
velocities by scales['velocity'] (m/s), the mass as the fraction of fuel left, thrusts by rho_2,
the flight time as log(t_f / scales['time']); the miss enters as asinh(miss / resolution)
(MISS_RESOLUTION: 1 m, 0.1 m/s), linear near the target and logarithmic far from it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ...model import MODEL_SIZES, ModelConfig, SwiGLUBlock, TinyRecursiveControl
from .problem import RocketLanding

MARGIN = 1e-5  # relative distance kept from each thrust bound
MISS_RESOLUTION = {"position": 1.0, "velocity": 0.1}  # m, m/s
MISS_SCALES = np.array([MISS_RESOLUTION["position"]] * 3 + [MISS_RESOLUTION["velocity"]] * 3)  # of r_N - r*, v_N - v*
GLIDE_RESOLUTION = 1.0  # m: the glide-slope violation's scale in the training loss
GLIDE_BAND = 0.1  # m: how far inside the glide cone the correction puts the nodes it pins
CORRECTION_STEPS = 40  # at most: a problem leaves the batch once it lands inside the cone
ACTIVE_SET_ROUNDS = 10  # of the quadratic program inside each Gauss-Newton step
LINE_SEARCH_HALVINGS = 8  # a step is halved at most this often before the problem stops
MAX_STEP = 2.0  # the largest change of one raw number in one Gauss-Newton step
ACCEPT_WITHIN = (5.0, 1.0, 1.0)  # m, m/s, m: predict_corrected's accept_within for a success inside the cone
# correct_rest starts each magnitude's sigmoid argument within +-4 (1.8% to 98.2% of the range):
# a better-trained network rides the bounds (|argument| 10, slope 5e-5), and the re-plans from
# its plans lost authority (98% of 200 gusty landings within 1 m and 0.5 m/s, against 100% from
# +-4, at 0.37% median fuel above the calm optimum instead of 0.21%; +-3 gave 0.84%)
REPLAN_REACH = 4.0
GLIDE_AFTER = 10.0  # the correction adds the glide rows once the miss is within 10 m and 1 m/s
# Newton steps for lo_k: relative error about x^8 for x = alpha rho_1 dt / m (0.002 at the task's dt,
# 0.06 at dt = 30 s), far below MARGIN; the iterates approach from below, so MARGIN covers the rest
LOWER_BOUND_NEWTON_STEPS = 3


def _merit(error, violations, near):
    """[b]: what a Gauss-Newton step must lower: |e|^2, plus, for the problems near [b] the pad, the
    squared excess of every glide violation over -GLIDE_BAND (g in m)."""
    excess = np.maximum(violations + GLIDE_BAND, 0.0) ** 2
    return (error ** 2).sum(1) + np.where(near[:, None], excess, 0.0).sum(1)


def interval_length(t, base, squashed: bool):
    """(dt [B] s, d dt / d t [B]) of the time's raw number t [B]: base exp(2 tanh(t / 2)) for a whole
    answer (t_f / N, read as read_answer does), base exp(t) for the rest of a flight."""
    if squashed:
        squash = np.tanh(t / 2)
        dt = base * np.exp(2 * squash)
        return dt, dt * (1 - squash ** 2)
    dt = base * np.exp(t)
    return dt, dt


class LandingRecursiveControl(TinyRecursiveControl):
    """Maps (initial_states [B, 7], target_states [B, 7]) to (thrusts [B, N, 3] in N, time_horizons [B] in s).

    Each answer (a row of forward()'s output) is one vector [3N + 1]: the thrusts, flattened, then
    the flight time."""

    has_c_forward = True  # forward.c reads the landing's answer too (its landing_read)

    def __init__(self, config: ModelConfig):
        nn.Module.__init__(self)
        self.config = config
        self.problem = landing = RocketLanding.from_dict(config.problem)
        for quantity in ("position", "velocity", "time"):
            if not config.scales.get(quantity, 0) > 0:
                raise ValueError(f"scales[{quantity!r}] must be a positive number, got {config.scales.get(quantity)}")
        N, D = landing.num_steps, config.latent_dim
        self.control_shape, self.answer_shape = (N, 3), (3 * N + 1,)
        self.embed_context = nn.Linear(7 + 6, D, bias=False)
        self.embed_controls = nn.Linear(3 * N + 1, D, bias=False)  # the answer: thrusts and flight time
        self.embed_error = nn.Linear(6, D, bias=False) if config.error_feedback else None
        self.net = nn.Sequential(*[SwiGLUBlock(D, config.expansion * D) for _ in range(config.num_layers)])
        self.decode = nn.Linear(D, 4 * N + 1, bias=False)
        nn.init.zeros_(self.decode.weight)
        vehicle = landing.vehicle
        hover = (vehicle.wet_mass * vehicle.gravity - vehicle.thrust_min) / (vehicle.thrust_max - vehicle.thrust_min)
        self.magnitude_offset = math.log(hover / (1 - hover))  # the zero answer: about hover thrust
        z_init = torch.nn.init.trunc_normal_(torch.empty(D), std=1.0, generator=torch.Generator().manual_seed(0))
        self.register_buffer("z_init", z_init)

    @classmethod
    def for_training_set(cls, size: str, train_set, **overrides):
        """An untrained model, its inputs scaled per quantity: the largest |position|, the largest
        |velocity| and the median flight time of the training set."""
        x0 = train_set.initial_states
        scales = {"position": float(np.abs(x0[:, 0:3]).max()), "velocity": float(np.abs(x0[:, 3:6]).max()),
                  "time": float(np.median(train_set.time_horizons))}
        return cls.create(size, landing=train_set.problem, scales=scales, **overrides)

    @classmethod
    def create(cls, size: str = "medium", landing: RocketLanding | None = None, scales: dict | None = None,
               **overrides):
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose one of {list(MODEL_SIZES)}")
        overrides.setdefault("latent_dim", MODEL_SIZES[size])
        scales = scales or {"position": 2500.0, "velocity": 80.0, "time": 45.0}
        return cls(ModelConfig(problem=(landing or RocketLanding()).to_dict(), scales=dict(scales), **overrides))

    # ---- reading the answer ------------------------------------------------------------------
    def initial_carry(self, batch_size: int):
        y = self.z_init.new_zeros(batch_size, 4 * self.problem.num_steps + 1)
        return y, self.z_init.expand(batch_size, -1)

    def context(self, initial_states, target_states):
        vehicle, scales = self.problem.vehicle, self.config.scales
        fuel_left = (initial_states[:, 6:7] - vehicle.dry_mass) / (vehicle.wet_mass - vehicle.dry_mass)
        features = [initial_states[:, 0:3] / scales["position"], initial_states[:, 3:6] / scales["velocity"],
                    fuel_left, target_states[:, 0:3] / scales["position"], target_states[:, 3:6] / scales["velocity"]]
        return self.embed_context(torch.cat(features, dim=-1))

    def landing_of(self, y, initial_states):
        """(answer [B, 3N+1]: thrusts and flight time, [r_N, v_N] [B, 6]) of raw answers y [B, 4N+1]."""
        answer, positions, velocity = self.flight_of(y, initial_states)
        return answer, torch.cat([positions[:, -1], velocity], dim=-1)

    def flight_of(self, y, initial_states):
        """(answer [B, 3N+1], positions r_1 .. r_N [B, N, 3] in m, v_N [B, 3] in m/s) of raw answers y."""
        N, B = self.problem.num_steps, y.shape[0]
        time_horizons = self.config.scales["time"] * torch.exp(2 * torch.tanh(y[:, -1] / 2))
        thrusts, positions, velocity = self.fly(initial_states, y[:, :-1].reshape(B, N, 4), time_horizons / N)
        return torch.cat([thrusts.flatten(1), time_horizons[:, None]], dim=-1), positions, velocity

    def read_answer(self, y, initial_states, target_states, with_miss: bool = True):
        """(answer [B, 3N+1], its features [B, 3N+1], the normalized miss [B, 6] or None)."""
        landing = self.problem
        answer, landed = self.landing_of(y, initial_states)
        time_horizons = answer[:, -1]
        thrusts = answer[:, :-1]
        features = torch.cat([thrusts / landing.vehicle.thrust_max,
                              torch.log(time_horizons / self.config.scales["time"])[:, None]], dim=-1)
        miss = None
        if with_miss and self.embed_error is not None:
            error = landed - target_states[:, :6]
            miss = torch.cat([torch.asinh(error[:, :3] / MISS_RESOLUTION["position"]),
                              torch.asinh(error[:, 3:] / MISS_RESOLUTION["velocity"])], dim=-1)
        return answer, features, miss

    def directions(self, raw):
        """Unit thrust directions [B, N, 3] from raw [B, N, 3] (within the pointing cone, if any)."""
        w = raw + raw.new_tensor([0.0, 0.0, 1.0])
        if self.problem.pointing_angle is None:
            return w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(1e-12)
        horizontal = torch.linalg.vector_norm(w[..., :2], dim=-1, keepdim=True)
        tilt = torch.atan2(horizontal, w[..., 2:3]) * (self.problem.pointing_angle / 180.0)  # [0, pi] -> [0, limit]
        heading = w[..., :2] / horizontal.clamp_min(1e-12)
        return torch.cat([torch.sin(tilt) * heading, torch.cos(tilt)], dim=-1)

    def fly(self, initial_states, raw, dt):
        """Thrusts within the annulus, flown through the exact interval dynamics.

        initial_states [B, 7], raw [B, n, 4] (per interval: three numbers for the direction, one for
        the magnitude), dt [B] (s per interval; n is N for a whole answer, fewer for the rest of a
        flight) -> (thrusts [B, n, 3] in N, positions r_1 .. r_n [B, n, 3] in m, v_n [B, 3] in m/s).

        Only the mass needs a loop over the intervals (each interval's least thrust depends on
        the mass it starts with); positions and velocities are then sums over the intervals (_flight)."""
        vehicle = self.problem.vehicle
        alpha, rho_1 = vehicle.fuel_rate, vehicle.thrust_min
        high = vehicle.thrust_max * (1 - MARGIN)
        directions = self.directions(raw[..., :3])
        fractions = torch.sigmoid(raw[..., 3] + self.magnitude_offset)  # [B, n]
        m = initial_states[:, 6]
        magnitudes, masses = [], []
        for k in range(raw.shape[1]):
            burn = alpha * dt / m  # ln(m_k / m_{k+1}) per newton
            low = torch.full_like(m, rho_1)
            for _ in range(LOWER_BOUND_NEWTON_STEPS):  # on low - rho_1 exp(burn low) = 0, from below
                grown = rho_1 * torch.exp(burn * low)
                low = low - (low - grown) / (1 - burn * grown)
            magnitude = low * (1 + MARGIN) + (high - low * (1 + MARGIN)) * fractions[:, k]
            magnitudes.append(magnitude), masses.append(m)
            m = m * torch.exp(-burn * magnitude)
        magnitudes, masses = torch.stack(magnitudes, dim=1), torch.stack(masses, dim=1)  # [B, N]
        thrusts = magnitudes[..., None] * directions
        return (thrusts, *self._flight(initial_states, thrusts / masses[..., None], dt))

    def _flight(self, initial_states, thrust_accelerations, dt):
        """(positions r_1 .. r_N [B, N, 3] in m, v_N [B, 3] in m/s) of the accelerations T_k / m_k
        [B, N, 3] held over intervals of dt [B] s: v_{k+1} = v_k + dt a_k and
        r_{k+1} = r_k + dt v_k + dt^2 a_k / 2, exact for a constant acceleration, as cumulative sums."""
        accelerations = thrust_accelerations + initial_states.new_tensor([0.0, 0.0, -self.problem.vehicle.gravity])
        dt = dt[:, None, None]
        velocities = initial_states[:, None, 3:6] + dt * torch.cumsum(accelerations, dim=1)  # v_1 .. v_N
        starts = torch.cat([initial_states[:, None, 3:6], velocities[:, :-1]], dim=1)  # v_0 .. v_{N-1}
        positions = initial_states[:, None, 0:3] + torch.cumsum(dt * starts + 0.5 * dt ** 2 * accelerations, dim=1)
        return positions, velocities[:, -1]

    def glide_violations(self, positions, target_states):
        """[B, N-1]: tan(gamma) * horizontal distance - height above the target (m) at the inner
        nodes r_1 .. r_{N-1} of positions [B, N, 3]; positive where the glide slope is violated.
        None without a glide slope. (Node 0 is given; node N is the target itself.)"""
        if self.problem.glide_slope == 0:
            return None
        relative = positions[:, :-1] - target_states[:, None, 0:3]
        horizontal = torch.sqrt(relative[..., 0] ** 2 + relative[..., 1] ** 2 + 1e-12)  # smooth at the axis
        return self.problem.glide_slope_tangent * horizontal - relative[..., 2]

    def c_answer_fields(self) -> dict:
        """How forward.c reads this answer: its landing_read (kind 1), with these constants."""
        landing, scales, N = self.problem, self.config.scales, self.problem.num_steps
        vehicle = landing.vehicle
        return {"kind": 1, "y_size": 4 * N + 1, "a_size": 3 * N + 1, "landing_N": N,
                "newton_steps": LOWER_BOUND_NEWTON_STEPS, "has_pointing": int(landing.pointing_angle is not None),
                "pointing_ratio": (landing.pointing_angle or 0.0) / 180.0, "alpha": vehicle.fuel_rate,
                "rho_1": vehicle.thrust_min, "rho_2": vehicle.thrust_max, "gravity": vehicle.gravity,
                "margin": MARGIN, "magnitude_offset": self.magnitude_offset, "time_scale": scales["time"],
                "position_scale": scales["position"], "velocity_scale": scales["velocity"],
                "dry_mass": vehicle.dry_mass, "wet_mass": vehicle.wet_mass,
                "res_position": MISS_RESOLUTION["position"], "res_velocity": MISS_RESOLUTION["velocity"]}

    # ---- what export.py asks of a model -------------------------------------------------------
    def feedback_exportable(self) -> bool:
        """The landing's feedback is its own scan, plain tensor operations: ONNX has them all."""
        return True

    def example_states(self, rng: np.random.Generator, count: int):
        """(initial_states, target_states) [count, 7] float32 from the task's box."""
        from .problem import sample_problems
        return tuple(a.astype(np.float32) for a in sample_problems(rng, count, self.problem))

    # the mass scan's exponentials amplify float32 round-off: 1.1e-5 of rho_2 on the trained medium model
    export_tolerance = 1e-4

    def answer_scale(self) -> np.ndarray:
        """[3N+1]: thrusts against rho_2, the flight time against its scale."""
        N = self.problem.num_steps
        return np.array([self.problem.vehicle.thrust_max] * (3 * N) + [self.config.scales["time"]])

    @staticmethod
    def answer_of(last_refinement: np.ndarray):
        """predict's answer from the last refinement [B, 3N+1]: (thrusts [B, N, 3], time_horizons [B])."""
        return LandingRecursiveControl.split(last_refinement)

    @staticmethod
    def split(answers: np.ndarray):
        """(thrusts [..., N, 3], time_horizons [...]) of answers [..., 3N+1]."""
        return answers[..., :-1].reshape(*answers.shape[:-1], -1, 3), answers[..., -1]

    # ---- training ---------------------------------------------------------------------------
    def imitation_loss(self, answer, optimal_thrusts, optimal_time_horizons) -> torch.Tensor:
        """Mean squared thrust error in units of rho_2, plus the squared log-ratio of the flight times."""
        thrusts = answer[:, :-1].view_as(optimal_thrusts)
        thrust_error = torch.mean(((thrusts - optimal_thrusts) / self.problem.vehicle.thrust_max) ** 2)
        return thrust_error + torch.mean(torch.log(answer[:, -1] / optimal_time_horizons) ** 2)

    def landing_errors(self, initial_states, target_states, answer) -> torch.Tensor:
        """[B, 6]: r_N - r*, v_N - v* (m, m/s), through the exact dynamics (float32)."""
        positions, velocity = self._flight_of_answer(initial_states, answer)
        return torch.cat([positions[:, -1], velocity], dim=-1) - target_states[:, :6]

    def _flight_of_answer(self, initial_states, answer, with_fuel: bool = False):
        """(positions r_1 .. r_N [B, N, 3], v_N [B, 3]) of an answer [B, 3N+1]: the masses by their
        recursion, then _flight; with_fuel adds the fuel used m_0 - m_N [B] (kg)."""
        B, N = answer.shape[0], self.problem.num_steps
        thrusts, time_horizons = answer[:, :-1].view(B, N, 3), answer[:, -1]
        dt = time_horizons / N
        burn = self.problem.vehicle.fuel_rate * torch.linalg.vector_norm(thrusts, dim=-1) * dt[:, None]  # [B, N]
        m = initial_states[:, 6]
        masses = []
        for k in range(N):  # ln(m_k / m_{k+1}) = alpha |T_k| dt / m_k
            masses.append(m)
            m = m * torch.exp(-burn[:, k] / m)
        flight = self._flight(initial_states, thrusts / torch.stack(masses, dim=1)[..., None], dt)
        return (*flight, initial_states[:, 6] - m) if with_fuel else flight

    def objective(self, initial_states, target_states, answer):
        """What fine-tuning (studies/finetune.py) minimizes, differentiable: (fuel used [B] in kg,
        miss [B, 6 + N-1]: the landing errors in units of 1 m and 0.1 m/s, then each inner node's
        glide-slope violation in m, 0 inside the cone). Its penalty on |miss|^2 stands in for the
        landing and the glide slope, as the terminal penalty does on the other tasks."""
        positions, velocity, fuel = self._flight_of_answer(initial_states, answer, with_fuel=True)
        error = torch.cat([positions[:, -1], velocity], dim=-1) - target_states[:, :6]
        resolution = error.new_tensor(MISS_SCALES)
        violations = self.glide_violations(positions, target_states)
        glide = torch.relu(violations) if violations is not None else error.new_zeros(len(error), 0)
        return fuel, torch.cat([error / resolution, glide], dim=-1)

    def miss_loss(self, initial_states, target_states, answer) -> torch.Tensor:
        """The squared landing miss and glide-slope violation, each through asinh(error / resolution)
        (MISS_RESOLUTION: 1 m, 0.1 m/s; GLIDE_RESOLUTION 1 m): quadratic near zero, logarithmic far
        from it. The miss is averaged over its six components; each inner node's violation adds as
        much as one more component would (so dipping under the cone by d at every one of the N-1
        inner nodes costs (N-1)/6 times as much as missing the pad by d on every axis)."""
        positions, velocity = self._flight_of_answer(initial_states, answer)
        error = torch.cat([positions[:, -1], velocity], dim=-1) - target_states[:, :6]
        resolution = error.new_tensor(MISS_SCALES)
        loss = torch.mean(torch.asinh(error / resolution).square())
        violations = self.glide_violations(positions, target_states)
        if violations is not None:
            loss = loss + torch.asinh(torch.relu(violations) / GLIDE_RESOLUTION).square().sum(1).mean() / 6
        return loss

    def terminal_errors(self, initial_states, target_states, answer) -> torch.Tensor:
        """[B]: landing position error (m), what validation reports."""
        return torch.linalg.vector_norm(self.landing_errors(initial_states, target_states, answer)[:, :3], dim=-1)

    # ---- the correction step ---------------------------------------------------------------------
    def correct(self, y, initial_states, target_states, iterations: int = CORRECTION_STEPS, tolerance: float = 1e-4):
        """Gauss-Newton on the raw answer y [B, 4N+1] towards r_N = r*, v_N = v*, inside the glide
        cone (landing_gauss_newton); the flight time moves too. Returns the corrected y, a float64
        tensor."""
        base = np.full(len(y), self.config.scales["time"] / self.problem.num_steps)
        y, _ = self.landing_gauss_newton(np.asarray(y.detach().cpu(), np.float64), np.asarray(initial_states, np.float64),
                                         base, True, np.asarray(target_states, np.float64), iterations, tolerance)
        return torch.from_numpy(y)

    def correct_rest(self, raw, dt, states, target_states, iterations: int = CORRECTION_STEPS,
                     tolerance: float = 1e-4):
        """The rest of a flight re-planned from the measured states [B, 7]: Gauss-Newton on its raw
        answer raw [B, n, 4] (the n intervals left, of dt [B] s each) towards the target inside the
        glide cone (landing_gauss_newton), the touchdown time kept; where that leaves a problem off
        the pad, again with the log of the intervals' length free. Each magnitude starts within
        REPLAN_REACH of its sigmoid's middle. Returns (raw [B, n, 4], dt [B])
        as float64 tensors, and landed [B] (numpy bool: the re-plan's miss within tolerance)."""
        B, n = raw.shape[:2]
        dt = np.asarray(dt, np.float64)
        raw = np.asarray(raw, np.float64).copy()  # a tensor, or an array, left as it was
        # off the sigmoid's flat ends: a thrust at its bound has no authority left in the linearization
        raw[..., 3] = np.clip(raw[..., 3] + self.magnitude_offset, -REPLAN_REACH, REPLAN_REACH) - self.magnitude_offset
        start = np.concatenate([raw.reshape(B, 4 * n), np.zeros((B, 1))], axis=1)
        v, landed = self.landing_gauss_newton(start, np.asarray(states, np.float64), dt, False,
                                              np.asarray(target_states, np.float64), iterations, tolerance,
                                              modes=((False, True), (False, False), (True, True), (True, False)))
        return (torch.from_numpy(v[:, :-1].reshape(B, n, 4)), torch.from_numpy(interval_length(v[:, -1], dt, False)[0]),
                landed)

    def landing_gauss_newton(self, v, states, base, squashed: bool, target_states, iterations: int,
                             tolerance: float, modes=((True, True), (True, False))):
        """Gauss-Newton on the raw numbers v [B, 4n+1] of flights from states [B, 7]: v[:, :4n] the n
        intervals' raw answer, v[:, 4n] their length (interval_length(v[:, 4n], base [B], squashed)).
        Towards r_n = r*, v_n = v* (target_states [B, 7]) inside the glide cone; numpy float64
        throughout, the Jacobian from flight.py (compiled). Returns (v [B, 4n+1], landed [B]:
        the miss within tolerance).

        The rows: the landing miss e in units of 1 m and 0.1 m/s (to be zeroed) and each inner
        node's glide violation g_k in m (to stay at or below -GLIDE_BAND), the glide rows joining
        once the miss is within GLIDE_AFTER (far from the pad the landing rows alone converge
        faster). Each step is the least change of v that meets the linearized rows (_least_change,
        a small QP), no raw number moving by more than MAX_STEP (a trust region: a full step far
        from the solution can throw the thrusts into the flat ends of their sigmoids), backtracked
        on _merit. It stops after `iterations` steps or once every |e| < tolerance (0.1 mm, 0.01
        mm/s by default) and no node violates the glide slope. Because it moves v, not the thrusts,
        the thrusts stay inside the annulus by construction.

        modes: (free_time, glide) pairs tried in turn on the problems the ones before left off the
        pad, each continuing from where the one before stopped (in the closed loop that lands more
        re-plans than starting over: 100% against 99.5% within 1 m and 0.5 m/s): by default the glide
        rows, then without them (a vehicle at the cone's edge metres from the pad can have no landing
        inside it; landing comes first, and its glide violation is what it is). A fixed time
        (free_time False) keeps v[:, 4n]."""
        v, todo = np.array(v, np.float64), np.ones(len(v), bool)
        for free_time, glide in modes:
            rows = np.flatnonzero(todo)
            if len(rows) == 0:
                break
            v[rows], landed = self._gauss_newton_steps(v[rows], states[rows], base[rows], squashed,
                                                       target_states[rows], iterations, tolerance, free_time, glide)
            todo[rows[landed]] = False
        return v, ~todo

    def _gauss_newton_steps(self, v, states, base, squashed, target_states, iterations, tolerance, free_time, glide):
        """landing_gauss_newton's steps in one mode: (v [B, P], landed [B]: the miss within tolerance).

        Each step is backtracked (halved up to LINE_SEARCH_HALVINGS times) until it lowers the
        squared residual of its rows (_merit); a problem that no step improves stops where it is."""
        slope = self.problem.glide_slope_tangent if glide and self.problem.glide_slope > 0 else None

        def residuals(v, rows, jacobian=True):
            return self._landing_residuals(v, states[rows], base[rows], squashed, target_states[rows], free_time,
                                           slope, jacobian)

        v = np.array(v, np.float64)
        rows = np.arange(len(v))  # the problems still moving: a finished one leaves the batch
        for _ in range(iterations):
            error, jac_error, violations, jac_violations = residuals(v[rows], rows)
            moving = ~((np.abs(error) < tolerance).all(1) & (violations <= 0).all(1))
            rows, error, jac_error = rows[moving], error[moving], jac_error[moving]
            violations, jac_violations = violations[moving], jac_violations[moving]
            if len(rows) == 0:
                break
            near = (np.abs(error) < GLIDE_AFTER).all(1)
            step = self._least_change(error, jac_error, violations, jac_violations, near)
            merit, length = _merit(error, violations, near), np.ones(len(rows))
            moved = np.zeros(len(rows), bool)
            for _ in range(LINE_SEARCH_HALVINGS):
                trying = np.flatnonzero(~moved)
                trial = v[rows[trying]] - length[trying, None] * step[trying]
                e, _, g, _ = residuals(trial, rows[trying], jacobian=False)
                better = _merit(e, g, near[trying]) < merit[trying]
                v[rows[trying[better]]] = trial[better]
                moved[trying[better]] = True
                length[trying] /= 2
                if moved.all():
                    break
            rows = rows[moved]
        landed = (np.abs(residuals(v, np.arange(len(v)), jacobian=False)[0]) < tolerance).all(1)
        return v, landed

    @staticmethod
    def _least_change(error, jac_error, violations, jac_violations, near):
        """The Gauss-Newton step [b, P]: the least change that zeroes the linearized landing rows and
        keeps every linearized glide row at or below -GLIDE_BAND (a quadratic program, solved by a
        primal-dual active set over the glide rows, starting from the nodes within 2 GLIDE_BAND of
        the cone or beyond it: ACTIVE_SET_ROUNDS of add the violated rows, drop those whose
        multiplier is negative); glide rows only for the problems `near` [b] the pad. No raw number
        moves by more than MAX_STEP."""
        B = len(error)
        residual = np.concatenate([error, violations + GLIDE_BAND], axis=1)  # [B, M]: rows want value 0 (<= 0)
        jacobian = np.concatenate([jac_error, jac_violations], axis=1)
        M = residual.shape[1]
        gram = jacobian @ jacobian.transpose(0, 2, 1)  # [B, M, M], once; each round masks it
        scale = gram.diagonal(axis1=1, axis2=2).mean(-1)[:, None, None]
        active = np.concatenate([np.ones((B, 6), bool), (residual[:, 6:] > -GLIDE_BAND) & near[:, None]], axis=1)
        for _ in range(ACTIVE_SET_ROUNDS):
            mask = active[:, :, None] & active[:, None, :]
            system = np.where(mask, gram, 0.0) + ((~active)[:, :, None] * np.eye(M) + 1e-12 * np.eye(M)) * scale
            multipliers = np.linalg.solve(system, np.where(active, residual, 0.0)[..., None])[..., 0]
            step = (jacobian.transpose(0, 2, 1) @ multipliers[..., None])[..., 0]  # the change is -step
            after = residual - (jacobian @ step[..., None])[..., 0]  # the rows' linearized values
            drop = active & (multipliers < 0)
            add = ~active & (after > 1e-9) & near[:, None]
            drop[:, :6] = add[:, :6] = False
            if not (drop.any() or add.any()):
                break
            active = (active & ~drop) | add
        return step / np.maximum(np.abs(step).max(1, keepdims=True) / MAX_STEP, 1.0)

    def _landing_residuals(self, v, states, base, squashed, target_states, free_time, slope, jacobian=True):
        """Of raw numbers v [b, P] flown from states [b, 7]: (the landing miss e [b, 6] in units of 1 m
        and 0.1 m/s, its Jacobian [b, 6, P], the glide violations g [b, n-1] in m (none when slope is
        None), theirs [b, n-1, P]); the Jacobians None when jacobian is False. With free_time False
        the time's column is zero, so no step moves it."""
        from .flight import flight_jacobian
        resolution = MISS_SCALES
        B, P = v.shape
        n = (P - 1) // 4
        dt, ddt = interval_length(v[:, -1], base, squashed)
        _, positions, velocity, jac_positions, jac_velocity = flight_jacobian(
            self, states, v[:, :-1].reshape(B, n, 4), dt, ddt, jacobian=jacobian)
        error = (np.concatenate([positions[:, -1], velocity], axis=1) - target_states[:, :6]) / resolution
        jac_error = None
        if jacobian:
            jac_error = np.concatenate([jac_positions[:, -1], jac_velocity], axis=1) / resolution[:, None]
            if not free_time:
                jac_error[:, :, -1] = jac_positions[..., -1] = 0.0
        if slope is None:
            return error, jac_error, np.zeros((B, 0)), np.zeros((B, 0, P)) if jacobian else None
        relative = positions[:, :-1] - target_states[:, None, :3]
        horizontal = np.sqrt(relative[..., 0] ** 2 + relative[..., 1] ** 2 + 1e-12)  # smooth at the axis
        violations = slope * horizontal - relative[..., 2]
        jac_violations = None
        if jacobian:
            jac = jac_positions[:, :-1]
            jac_violations = (slope * (relative[..., 0, None] * jac[..., 0, :] + relative[..., 1, None] * jac[..., 1, :])
                              / horizontal[..., None] - jac[..., 2, :])
        return error, jac_error, violations, jac_violations

    def predict_corrected(self, initial_states, target_states, iterations: int = CORRECTION_STEPS,
                          accept_within=None):
        """(thrusts [B, N, 3], time_horizons [B]) of the network's answer after its correction step
        (correct(): up to `iterations` Gauss-Newton steps), numpy float64.

        accept_within: None corrects every answer (to 0.1 mm and 0.01 mm/s, inside the glide cone).
        (position m, velocity m/s, glide m), ACCEPT_WITHIN for instance, keeps the network's own
        answer wherever its exact flight (landing_flight.landing_miss) lands within the first two
        and leaves the glide cone by at most the third, and corrects only the rest: the landing's
        anytime answer, most problems costing the network and one exact flight."""
        x0, xt = (np.asarray(a, np.float64) for a in (initial_states, target_states))
        thrusts, time_horizons = (np.array(a, np.float64) for a in self.predict(x0, xt))
        rows = np.arange(len(x0))
        if accept_within is not None:
            rows = np.flatnonzero(~self.accepted(x0, xt, thrusts, time_horizons, accept_within))
        if len(rows):
            y = self.raw_answer(x0[rows], thrusts[rows], time_horizons[rows])
            y = self.correct(torch.from_numpy(y), x0[rows], xt[rows], iterations).numpy()
            thrusts[rows], time_horizons[rows] = self.thrusts_of(y, x0[rows])
        return thrusts, time_horizons

    def accepted(self, initial_states, target_states, thrusts, time_horizons, accept_within) -> np.ndarray:
        """[B] bool: the answers (thrusts [B, N, 3] in N, time_horizons [B] in s) whose exact flight
        lands within accept_within = (position m, velocity m/s) of target_states and leaves the
        glide cone by at most accept_within[2] m."""
        from .flight import landing_miss
        if not (len(accept_within) == 3 and all(np.isfinite(a) and a >= 0 for a in accept_within)):
            raise ValueError(f"accept_within must be three non-negative numbers (m, m/s, m), got {accept_within!r}")
        miss, glide = landing_miss(self.problem, initial_states, thrusts, time_horizons, target_states)
        return ((np.linalg.norm(miss[:, :3], axis=1) <= accept_within[0])
                & (np.linalg.norm(miss[:, 3:], axis=1) <= accept_within[1]) & (glide <= accept_within[2]))

    def thrusts_of(self, y, initial_states):
        """(thrusts [B, N, 3] in N, time_horizons [B] in s) that raw answers y [B, 4N+1] read as, numpy float64."""
        from .flight import flight_jacobian
        B, N = len(y), self.problem.num_steps
        dt, ddt = interval_length(y[:, -1], np.full(B, self.config.scales["time"] / N), True)
        thrusts = flight_jacobian(self, np.asarray(initial_states, np.float64), y[:, :-1].reshape(B, N, 4), dt, ddt,
                                  jacobian=False)[0]
        return thrusts, dt * N

    def corrected_answer(self, initial_states, target_states, iterations: int = CORRECTION_STEPS):
        """The raw answer y [B, 4N+1] (float64 tensor) of the network's answer (predict: its fastest
        path) after its correction step, for initial_states, target_states [B, 7] (numpy)."""
        initial_states, target_states = (np.asarray(a, np.float64) for a in (initial_states, target_states))
        thrusts, time_horizons = self.predict(initial_states, target_states)
        y = self.raw_answer(initial_states, thrusts, time_horizons)
        return self.correct(torch.from_numpy(y), initial_states, target_states, iterations)

    def raw_answer(self, initial_states, thrusts, time_horizons) -> np.ndarray:
        """A raw answer y [B, 4N+1] that reads (landing_of) as thrusts [B, N, 3] (N) and time_horizons
        [B] (s) from initial_states [B, 7]: landing_of inverted, numpy float64. (Only the direction
        of y_k[0:3] + e_z matters; its length is taken as 1.) Within MARGIN of a bound, or of the
        flight time's range, the inverse is clipped."""
        from .flight import thrust_fractions
        landing, N = self.problem, self.problem.num_steps
        thrusts, time_horizons = np.asarray(thrusts, np.float64), np.asarray(time_horizons, np.float64)
        magnitudes = np.linalg.norm(thrusts, axis=-1)  # [B, N]
        d = thrusts / np.maximum(magnitudes, 1e-300)[..., None]
        if landing.pointing_angle is not None:  # the tilt from vertical was scaled into the cone
            tilt = np.arccos(np.clip(d[..., 2], -1, 1)) * (180.0 / landing.pointing_angle)
            heading = d[..., :2] / np.maximum(np.linalg.norm(d[..., :2], axis=-1, keepdims=True), 1e-300)
            d = np.concatenate([np.sin(tilt)[..., None] * heading, np.cos(tilt)[..., None]], axis=-1)
        fractions = thrust_fractions(landing, np.asarray(initial_states, np.float64)[:, 6], magnitudes, time_horizons / N,
                                     LOWER_BOUND_NEWTON_STEPS, MARGIN)  # fly's bounds, on the mass the thrusts leave
        fractions = np.clip(fractions, MARGIN, 1 - MARGIN)
        magnitude_raw = np.log(fractions / (1 - fractions)) - self.magnitude_offset
        raw = np.concatenate([d - [0.0, 0.0, 1.0], magnitude_raw[..., None]], axis=-1)  # [B, N, 4]
        squash = np.clip(np.log(time_horizons / self.config.scales["time"]) / 2, -1 + MARGIN, 1 - MARGIN)
        return np.concatenate([raw.reshape(len(raw), -1), 2 * np.arctanh(squash)[:, None]], axis=1)

    # ---- numpy in, numpy out ------------------------------------------------------------------
    def predict(self, initial_states, target_states, device=None, tolerance=None):
        """(thrusts [B, N, 3] in N, time_horizons [B] in s) for initial_states, target_states [B, 7]."""
        if tolerance is not None:
            raise ValueError("tolerance: the anytime answer is not available for rocket_landing yet")
        return self.split(self.predict_refinements(initial_states, target_states, device)[-1])
