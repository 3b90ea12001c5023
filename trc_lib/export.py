"""Deployment: export a trained model to ONNX and run it with ONNX Runtime.

The exported graph maps (initial_states [B, n], target_states [B, n]) to every refinement
[N_sup, B, N, m] (a task's own model: its answer's shape), with the batch size symbolic; the
last refinement is the answer. Export checks that ONNX Runtime reproduces PyTorch to float32
round-off on random inputs before the file is kept. A graph whose feedback integrates the
dynamics unrolls it over the intervals: such an export takes minutes. `OnnxController` gives the same
`predict` / `predict_refinements` as a torch model, so `load_model("model.onnx")` works wherever a
checkpoint does.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import TRCError
from .files import atomic_path

METADATA_KEY = "trc_model_config"


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence a library logger below ERROR for the duration (torch.onnx logs about torchvision)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _session(path, threads: int | None = None):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(model, output, tolerance: float | None = None, seed: int = 0, log=print) -> dict:
    """Write `model` to `output` (.onnx) atomically; returns {'max_difference', 'path'} (the largest
    difference from PyTorch, relative to the answer's scale).

    Raises TRCError if ONNX Runtime differs from PyTorch by more than `tolerance` (default: the
    model's export_tolerance, 1e-5) of the answer's scale (model.answer_scale: max(1, u_max), or
    its own model's) on random inputs (the file is then not written).
    """
    import onnx
    output = Path(output)
    if not hasattr(model, "config_dict"):
        raise TRCError("export needs a .pt checkpoint from `trc train`, not an ONNX file")
    if output.suffix != ".onnx":
        raise TRCError(f"output {output}: the file name must end in .onnx")
    if model.config.error_feedback and not model.feedback_exportable():
        raise TRCError("export: a model with error feedback on an ODE system simulates its answer at every "
                       "recursion through compiled C (terminal_map.py), which ONNX has no operator for; "
                       "load the .pt checkpoint instead (load_model(path).predict runs that fast path), or "
                       "export a model trained with --no_error_feedback")
    model = model.cpu().eval()
    n = model.problem.system.state_dim
    batch = torch.export.Dim("batch", min=1, max=1_000_000)
    examples = (torch.zeros(4, n), torch.zeros(4, n))  # batch > 1, or export fixes the batch at 1
    with atomic_path(output) as tmp:
        # the exporter prints its progress and warns about internals; neither is the user's concern
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, examples, dynamo=True, input_names=["initial_states", "target_states"],
                                        output_names=["refinements"], dynamic_shapes=({0: batch}, {0: batch}),
                                        verbose=False)
            program.save(str(tmp))
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(model.config_dict())})
        onnx.save(proto, str(tmp))
        rng = np.random.default_rng(seed)
        difference = 0.0  # relative to the answer's scale (model.answer_scale: max(1, u_max); rho_2 for thrusts)
        for size in (1, 7, 256):
            x0, xt = model.example_states(rng, size)
            expected = model.predict_refinements(x0, xt)
            got = OnnxController(tmp).predict_refinements(x0, xt)
            difference = max(difference, float((np.abs(expected - got) / model.answer_scale()).max()))
        tolerance = model.export_tolerance if tolerance is None else tolerance
        if difference > tolerance:
            raise TRCError(f"{output}: ONNX Runtime differs from PyTorch by {difference:.2e} of the answer's scale "
                           f"> {tolerance:.0e}; not written")
    log(f"wrote {output}; ONNX Runtime matches PyTorch to {difference:.1e} of the answer's scale (max, random inputs)")
    return {"path": str(output), "max_difference": difference}


class OnnxController:
    """A model exported by export_onnx, run by ONNX Runtime on the CPU; numpy in, numpy out."""

    def __init__(self, path, threads: int | None = None):
        import onnx
        self.path = Path(path)
        try:
            proto = onnx.load(str(self.path), load_external_data=False)
            props = {p.key: p.value for p in proto.metadata_props}
            self.config = json.loads(props[METADATA_KEY]) if METADATA_KEY in props else None
            self.session = _session(self.path, threads)
        except Exception as e:  # onnx and onnxruntime raise their own types on foreign bytes
            raise TRCError(f"{self.path}: not a readable ONNX model ({type(e).__name__})") from None
        if self.config is None:
            raise TRCError(f"{self.path}: an ONNX model not written by `trc export` (no {METADATA_KEY} metadata)")
        from .model import model_class
        from .tasks import task_from_dict
        self.problem = task_from_dict(self.config["problem"])
        self._reader = model_class(self.problem)  # how predict reads the last refinement
        self.name = "TRC (ONNX Runtime)"
        # numbers stored in the graph: the weights plus the model's few fixed buffers (A^N, G, z_init)
        self.num_parameters = int(sum(np.prod(t.dims) for t in proto.graph.initializer))
        self.memory_bytes = self.path.stat().st_size

    def predict_refinements(self, initial_states, target_states) -> np.ndarray:
        """[N_sup, B, N, m] float64 from [B, n] inputs."""
        from .inference import check_states
        x0, xt = check_states(initial_states, target_states, self.problem)
        feed = {"initial_states": x0.astype(np.float32), "target_states": xt.astype(np.float32)}
        return self.session.run(None, feed)[0].astype(np.float64)

    def predict(self, initial_states, target_states):
        """The answer, as the torch model's predict gives it: controls [B, N, m] (float64), or a task's
        own model's answer (with a free final time: controls and time_horizons [B])."""
        return self._reader.answer_of(self.predict_refinements(initial_states, target_states)[-1])
