"""The task interface: a user's file is loaded, checked, recorded by hash, and refused clearly when wrong."""

import hashlib
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from trc_lib import Task
from trc_lib.data import FORMAT_VERSION
from trc_lib.errors import TRCError
from trc_lib.integrators import NUMPY_OPS
from trc_lib.interfaces.cli import main
from trc_lib.tasks import load_task, make_problem, task_from_dict

QUADROTOR = Path(__file__).resolve().parents[1] / "notebooks" / "planar_quadrotor.py"

# the minimal file of docs/your_system.md: dimensions, vector field, bounds, sampling
UNICYCLE = '''
from trc_lib import Task


class Unicycle(Task):
    """x = [px (m), py (m), heading (rad)]; u = [speed (m/s), turn rate (rad/s)]."""
    state_names = ("px", "py", "heading")
    control_names = ("speed", "turn rate")
    control_bounds = ((-1.0, 1.0), (-2.0, 2.0))
    time_horizon, num_steps = 4.0, 20
    initial_box = ((-1.0, 1.0), (-1.0, 1.0), (-0.5, 0.5))

    def vector_field(self, x, u, ops):
        v, w, th = ops.part(u, 0), ops.part(u, 1), ops.part(x, 2)
        return ops.stack([v * ops.cos(th), v * ops.sin(th), w])
'''


def write(folder: Path, source: str, name="my_task.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_a_minimal_task_file_has_every_default(tmp_path):
    task = load_task(f"{write(tmp_path, UNICYCLE)}:Unicycle")
    assert (task.state_dim, task.control_dim, task.num_steps, task.substeps) == (3, 2, 20, 4)
    assert task.dt == 4.0 / 20 and task.name == "unicycle"
    np.testing.assert_array_equal(task.target_center, np.zeros(3))
    assert task.terminal_indices == (0, 1, 2) and task.objective.terminal_constraint
    np.testing.assert_array_equal(task.objective.matrices()[1], np.eye(2))  # R = 1: minimum energy
    assert task.label_starts().shape == (1, 20, 2)


def test_a_task_file_round_trips_through_its_dict_with_its_hash(tmp_path):
    path = write(tmp_path, UNICYCLE)
    task = load_task(f"{path}:Unicycle", num_steps=10)
    record = task.to_dict()
    assert record["task"] == f"{path.resolve()}:Unicycle"
    assert record["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["parameters"] == {"num_steps": 10}
    assert task_from_dict(record) == task


def test_a_changed_task_file_is_refused_naming_both_versions(tmp_path):
    path = write(tmp_path, UNICYCLE)
    record = load_task(f"{path}:Unicycle").to_dict()
    path.write_text(path.read_text().replace("(-2.0, 2.0)", "(-3.0, 3.0)"))
    with pytest.raises(ValueError, match=f"{path.resolve()} has changed since this was made .*then, .* now"):
        task_from_dict(record)


def test_the_quadrotor_runs_its_dynamics_the_same_in_numpy_and_torch():
    task = load_task(f"{QUADROTOR}:PlanarQuadrotor")
    rng = np.random.default_rng(0)
    x0, _ = task.draw_problems(rng, 5)
    u = rng.uniform(task.control_lower, task.control_upper, (5, task.num_steps, 2))
    expected = task.rollout(x0, u)
    np.testing.assert_allclose(task.rollout_torch(torch.tensor(x0), torch.tensor(u)).numpy(), expected, atol=1e-12)
    hover = np.full((1, task.num_steps, 2), task.mass * task.gravity / 2)
    np.testing.assert_allclose(task.rollout(np.zeros((1, 6)), hover), 0.0, atol=1e-12)  # hovering stays put


BAD_TASKS = [
    ("nothing.py:Unicycle", None, "no such task file"),
    ("my_task.py:Segway", UNICYCLE, r"no class Segway \(its tasks: Unicycle\)"),
    ("my_task.py:np", UNICYCLE.replace("from trc_lib import Task", "from trc_lib import Task\nimport numpy as np"),
     "is not a task: a task subclasses trc_lib.Task"),
    ("my_task.py:Unicycle", UNICYCLE.replace("ops.stack([v * ops.cos(th), v * ops.sin(th), w])",
                                             "ops.stack([v * ops.cos(th), w])"),
     r"vector_field returns shape \[8, 2\] for 8 states, expected \[8, 3\]"),
    ("my_task.py:Unicycle", UNICYCLE.replace("v * ops.cos(th)", "v * ops.log(th - 10)"),
     "vector_field is not finite on states of its initial_box"),
    ("my_task.py:Unicycle", UNICYCLE.replace("ops.cos(th)", "ops.arccos(th)"),
     "ops.arccos does not exist: a vector field may use ops.part, ops.stack"),
    ("my_task.py:Unicycle", UNICYCLE.replace("(-2.0, 2.0)", "(2.0, -2.0)"),
     "Unicycle.control_bounds: component 1 has lower 2 and upper -2"),
    ("my_task.py:Unicycle", UNICYCLE.replace('control_names = ("speed", "turn rate")', 'control_names = ()'),
     "Unicycle: state_names and control_names must name at least one"),
    ("my_task.py:Unicycle", UNICYCLE.replace("from trc_lib import Task", "import no_such_module"),
     r"the task file failed to run \(ModuleNotFoundError"),
]


@pytest.mark.parametrize("spec, source, message", BAD_TASKS, ids=[m[:30] for _, _, m in BAD_TASKS])
def test_a_bad_task_file_is_one_line_and_exit_2_with_nothing_written(tmp_path, capsys, monkeypatch, spec, source,
                                                                      message):
    monkeypatch.chdir(tmp_path)
    if source is not None:
        write(tmp_path, source)
    out = tmp_path / "data"
    code = main(["generate", "--system", spec, "--num_samples", "4", "--output_dir", str(out)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith("trc generate: error:")
    import re
    assert re.search(message, error), error
    assert not out.exists()


def test_a_task_whose_targets_cannot_be_reached_stops_with_a_message(tmp_path, capsys):
    slow = UNICYCLE.replace("((-1.0, 1.0), (-2.0, 2.0))", "((-0.01, 0.01), (-0.01, 0.01))")
    path = write(tmp_path, slow)
    code = main(["check", "--system", f"{path}:Unicycle", "--num_labels", "2"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "the oracle reached none of 2 targets" in error and len(error.splitlines()) == 1


def test_trc_check_passes_the_quadrotor_with_its_four_versions_in_agreement(capsys):
    assert main(["check", "--system", f"{QUADROTOR}:PlanarQuadrotor", "--num_labels", "2"]) == 0
    out = capsys.readouterr().out
    assert "labels: 2 of 2 problems solved" in out and "compiled" in out


def test_parameters_of_a_task_file_are_overridden_from_the_command_line(tmp_path):
    path = write(tmp_path, UNICYCLE)
    task = make_problem(system=f"{path}:Unicycle", num_steps=8, control_bound=0.5)
    assert task.num_steps == 8 and task.control_bound == 0.5
    with pytest.raises(ValueError, match=r"Unicycle has no parameter \['mass'\]"):
        make_problem(system=f"{path}:Unicycle", mass=2.0)


def test_a_stage_cost_path_constraint_and_partial_terminal_condition_reach_the_optimizer():
    class Cart(Task):
        state_names, control_names = ("position", "velocity"), ("force",)
        control_bounds, initial_box = ((-2.0, 2.0),), ((-1.0, 1.0), (-1.0, 1.0))
        time_horizon, num_steps, substeps = 2.0, 10, 1
        terminal_constraint = ("position",)
        Q_f = (0.0, 1.0)

        def vector_field(self, x, u, ops):
            return ops.stack([ops.part(x, 1), ops.part(u, 0)])

        def stage_cost(self, x, u, target, ops):
            return ops.part(u, 0) ** 2 + 0.1 * ops.part(x, 1) ** 2

        def path_constraints(self, x, u, ops):
            return [ops.part(x, 1) - 1.03]  # never faster than 1.03 m/s

    task = Cart()
    from trc_lib.oracles import optimum
    x0, xt = np.array([[-1.0, 1.0]]), np.array([[1.0, 0.5]])
    solution, success = optimum(task, x0, xt, workers=1)
    states = solution.state_trajectories
    assert success[0] and abs(states[0, -1, 0] - 1.0) < 1e-6  # the position is pinned, the velocity is not
    assert task.constraint_violations(states, solution.control_sequences)[0] < 1e-6
    assert abs(states[0, :, 1].max() - 1.03) < 1e-6  # the speed limit binds on the way
    stage = solution.control_sequences[0, :, 0] ** 2 + 0.1 * states[0, :-1, 1] ** 2
    expected = task.dt * stage.sum() + (states[0, -1, 1] - 0.5) ** 2
    np.testing.assert_allclose(solution.costs[0], expected, rtol=1e-12)
    assert solution.terminal_multipliers[0, 1] == 0.0


def test_quadrotor_labels_agree_with_an_independent_optimizer():
    """IPOPT's multiple shooting against scipy's SLSQP on single shooting through the numpy rollout,
    from the same hover start: the same local optimum, to 1e-4 in cost."""
    import scipy.optimize
    from trc_lib.oracles import optimum
    task = load_task(f"{QUADROTOR}:PlanarQuadrotor", num_steps=12, time_horizon=2.4)
    x0, xt = task.draw_problems(np.random.default_rng(5), 2)
    solution, success = optimum(task, x0, xt, workers=1)
    assert success.all()
    N, m = task.num_steps, task.control_dim
    for b in range(2):
        def cost(flat):
            u = flat.reshape(1, N, m)
            return task.cost(task.rollout(x0[b:b + 1], u), u, xt[b:b + 1])[0]

        def miss(flat):
            return task.rollout(x0[b:b + 1], flat.reshape(1, N, m))[0, -1] - xt[b]

        start = task.label_starts()[0].ravel()
        found = scipy.optimize.minimize(cost, start, method="SLSQP", bounds=[(0.0, 10.0)] * (N * m),
                                        constraints=[{"type": "eq", "fun": miss}], options={"maxiter": 500, "ftol": 1e-12})
        assert found.success and np.abs(miss(found.x)).max() < 1e-6
        assert abs(found.fun - solution.costs[b]) <= 1e-4 * solution.costs[b], (found.fun, solution.costs[b])


def test_ops_name_what_they_offer():
    with pytest.raises(AttributeError, match="ops.arcsin does not exist"):
        NUMPY_OPS.arcsin(1.0)


def test_checkpoints_and_datasets_of_the_version_before_tasks_are_refused_naming_it(tmp_path):
    from trc_lib import __version__, load_model, read_dataset
    old = tmp_path / "old.pt"
    torch.save({"format": "trc-checkpoint", "format_version": 1, "trc_lib_version": "0.1.0", "config": {},
                "model_state": {}}, old)
    with pytest.raises(TRCError, match=f"format 1 \\(written by trc_lib 0.1.0\\), this is trc_lib {__version__}"):
        load_model(old)
    data = tmp_path / "old.npz"
    np.savez(data, metadata=np.array('{"format_version": 2}'))
    with pytest.raises(TRCError, match=f"dataset format version 2, expected {FORMAT_VERSION}"):
        read_dataset(data)


def test_lqr_applies_where_a_control_holds_the_target_and_lands_near_it():
    """The quadrotor's targets are held by hover thrust (4.905 N each): LQR linearized there lands
    close from a nearby start; the double integrator's moving targets are held by nothing."""
    from trc_lib.baselines import LQRController, equilibrium_control
    task = load_task(f"{QUADROTOR}:PlanarQuadrotor")
    np.testing.assert_allclose(equilibrium_control(task, np.zeros(6)), [4.905, 4.905], atol=1e-9)
    lqr = LQRController(task)
    x0, xt = np.array([[0.2, -0.1, 0.05, 0.0, 0.1, 0.0]]), np.array([[0.0, 0.3, 0.0, 0.0, 0.0, 0.0]])
    assert lqr.applies(xt)
    controls = lqr.predict(x0, xt)
    assert ((controls >= 0) & (controls <= 10)).all()
    assert task.terminal_miss(task.rollout(x0, controls)[:, -1], xt)[0] < 0.05
    moving = make_problem()  # the double integrator: a target with velocity drifts under every control
    assert equilibrium_control(moving, np.array([1.0, 1.0])) is None
    assert not LQRController(moving).applies(np.array([[1.0, 1.0]]))


def test_a_model_too_large_for_memory_is_refused_before_allocating():
    from trc_lib import TinyRecursiveControl
    with pytest.raises(ValueError, match=r"latent_dim 300000: the model would have [\d,]+ parameters .* more than this"):
        TinyRecursiveControl.create("small", latent_dim=300000)


def test_a_checkpoint_of_a_changed_task_file_is_refused_in_one_line(tmp_path):
    from trc_lib import load_model
    from trc_lib.checkpoint import save_checkpoint
    from trc_lib.model import TinyRecursiveControl
    path = write(tmp_path, UNICYCLE)
    model = TinyRecursiveControl.create("small", problem=load_task(f"{path}:Unicycle"))
    save_checkpoint(tmp_path / "model.pt", model, model.state_dict())
    path.write_text(path.read_text().replace("(-2.0, 2.0)", "(-3.0, 3.0)"))
    with pytest.raises(TRCError, match=f"model.pt: its task: {path.resolve()} has changed since this was made"):
        load_model(tmp_path / "model.pt")
