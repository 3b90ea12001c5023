"""Inference: what a trained model does when asked, numpy in and numpy out (predict), beside the
paper's algorithm in model.py rather than inside it.

    predict(x0, x*)                  the answer, controls [B, N, m]
    predict_refinements(x0, x*)      the answer after every supervision step [N_sup, B, N, m]
    predict_anytime(x0, x*, t)       halting: each problem stops refining once its simulated miss
                                     is below t (TRM's learned halting head, replaced by the exact miss)
    set_inference_precision(p)       float32, bfloat16 or float16 weights
    compile_inference()              torch.compile

Where it is the faster path, the forward pass runs in C (fast/forward.py, the same numbers); the
hooks at the end tell that C path and the ONNX export how this model reads its answer.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .fast import forward as fast_forward

INFERENCE_PRECISIONS = ("float32", "bfloat16", "float16")


def _all_finite(array: np.ndarray) -> bool:
    """Whether every entry is finite. A few entries in Python floats: at batch 1 numpy's isfinite
    and all cost ~2 us a call for two arrays, a fiftieth of a small model's answer."""
    if array.size <= 16:
        return all(map(math.isfinite, array.ravel().tolist()))
    return bool(np.isfinite(array).all())


def check_states(initial_states, target_states, problem):
    """Both as float64 arrays [B, n] with the same B and finite values, within what the task
    accepts (Task.check_problems), or ValueError."""
    state_dim = problem.system.state_dim
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
    problem.check_problems(*arrays)
    return arrays


@dataclass
class AnytimeAnswer:
    """predict_anytime's result (numpy): controls [B, N, m]; refinements [B], the supervision
    steps each problem used; terminal_errors [B], ||x_N - x*|| of its answer (exact dynamics)."""

    controls: np.ndarray
    refinements: np.ndarray
    terminal_errors: np.ndarray


class Inference:
    """predict and its plumbing, for TinyRecursiveControl (which inherits it): see the module docstring."""

    def compile_inference(self) -> "Inference":
        """Use torch.compile for predict(): about 2x faster at batch 1 on a CPU, but the first
        call for each new batch shape compiles (tens of seconds). Returns self."""
        self._compiled_forward = torch.compile(self.forward)
        return self

    def set_inference_precision(self, precision: str = "float32") -> "Inference":
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
        measured, not assumed (benchmarks/). Training is unaffected. Returns self.
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
        initial_states, target_states = check_states(initial_states, target_states, self.problem)
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
                x0, xt = check_states(initial_states, target_states, self.problem)
                return fast.run_numpy(x0, xt)
        return self._predict_refinements_torch(initial_states, target_states, device)

    def _fast_forward_for(self, batch_size: int | None):
        """forward.c for a batch of batch_size problems on the model's own device where it is the
        faster path (a C compiler at hand, the CPU; float32 or float16 weights at the batches
        FastForward.serves, bfloat16 at any batch where the CPU has AMX); None elsewhere."""
        precision = self.__dict__.get("_inference_precision", "float32")
        if batch_size is None or not fast_forward.ENABLED or self._buffers["z_init"].device.type != "cpu":
            return None
        engine = fast_forward.FastForward.of(self, precision)  # bfloat16: AMX tiles, where the CPU has them
        return engine if engine is not None and engine.serves(batch_size) else None

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
        the CPU, the batches FastForward.serves, a C compiler at hand; None elsewhere."""
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
