"""The trainer: the files it writes, the guide's Python API, schedulers, early stopping, resume."""

import json
import pickle

import numpy as np
import pytest
import torch

from trc_lib import TinyRecursiveControl, create_data_loaders, load_dataset, load_model, train
from trc_lib.data import make_problem
from trc_lib.errors import TRCError
from trc_lib.training import SCHEDULERS

QUIET = dict(progress=False, log=lambda *_: None)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TinyRecursiveControl.create("small", latent_dim=16, **kw)


def test_trainer_writes_the_guides_files(trained_dir):
    for name in ("best_model.pt", "last_model.pt", "training_stats.json", "training_curves.png"):
        assert (trained_dir / name).stat().st_size > 0, name
    assert not list(trained_dir.glob("*.tmp"))
    stats = json.loads((trained_dir / "training_stats.json").read_text())
    assert stats["status"] == "finished" and stats["epoch"] == 3
    assert [h["epoch"] for h in stats["history"]] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_terminal_error", "lr", "seconds"} <= set(stats["history"][0])


def test_last_model_is_the_last_epoch_and_best_model_the_best(trained_dir):
    last = torch.load(trained_dir / "last_model.pt", weights_only=True)
    best = torch.load(trained_dir / "best_model.pt", weights_only=True)
    stats = json.loads((trained_dir / "training_stats.json").read_text())
    assert last["epoch"] == 3
    assert best["epoch"] == stats["best_epoch"]
    assert best["val_loss"] == min(h["val_loss"] for h in stats["history"])


def test_checkpoints_load_with_weights_only_and_predict_numpy(trained_dir, test_set):
    payload = torch.load(trained_dir / "best_model.pt", weights_only=True)
    assert payload["config"]["problem"] == test_set.metadata["problem"]
    model = load_model(trained_dir / "best_model.pt")
    controls = model.predict(test_set.initial_states[:7], test_set.target_states[:7])
    assert isinstance(controls, np.ndarray) and controls.shape == (7, 15, 1)
    assert next(model.parameters()).device.type == "cpu"


def test_training_reduces_the_loss(train_path, tmp_path):
    train_set, val_set = load_dataset(train_path)
    train_loader, val_loader = create_data_loaders(train_set, val_set, batch_size=32)
    model = train(tiny_model(), train_loader, val_loader, epochs=4, lr=3e-3, output_dir=tmp_path, **QUIET)
    history = json.loads((tmp_path / "training_stats.json").read_text())["history"]
    assert history[-1]["val_loss"] < 0.5 * history[0]["val_loss"]
    assert isinstance(model, TinyRecursiveControl) and not model.training


def test_validation_judges_the_loss_it_trains_on(train_path):
    from trc_lib.training import validate
    train_set, val_set = load_dataset(train_path)
    _, val_loader = create_data_loaders(train_set, val_set, batch_size=32)
    model = tiny_model().eval()
    with torch.no_grad():
        plain, weighted = validate(model, val_loader), validate(model, val_loader, terminal_weight=2.0)
        misses = [(model.miss_loss(x0, xt, model(x0, xt)[-1]), len(x0)) for x0, xt, *_ in val_loader]
    mean_miss = sum(float(loss) * n for loss, n in misses) / sum(n for _, n in misses)
    assert mean_miss > 0
    assert weighted["val_loss"] == pytest.approx(plain["val_loss"] + 2.0 * mean_miss, rel=1e-5)
    assert weighted["val_terminal_error"] == plain["val_terminal_error"]


def test_a_second_stage_starts_from_the_checkpoints_weights_with_new_loop_counts(trained_dir, train_path, tmp_path):
    from trc_lib.interfaces import workflow
    start = load_model(trained_dir / "best_model.pt")
    model = workflow.train_model(train_path, output_dir=tmp_path, epochs=1, lr=1e-12, ema_decay=0.0,
                                 num_supervision_steps=5, terminal_weight=1.0, start_from=trained_dir / "best_model.pt",
                                 **QUIET)
    assert model.config.num_supervision_steps == 5 and model.config.latent_dim == start.config.latent_dim == 32
    for name, weight in start.state_dict().items():  # lr 1e-12: one epoch leaves the weights where they started
        torch.testing.assert_close(model.state_dict()[name], weight, atol=1e-9, rtol=0)
    run = json.loads((tmp_path / "training_stats.json").read_text())["run"]
    assert run["start_from"] == str((trained_dir / "best_model.pt").resolve()) and run["terminal_weight"] == 1.0


@pytest.mark.parametrize("options, fragment", [({"model_size": "medium"}, "model_size medium does not fit"),
                                               ({"latent_dim": 48}, "latent_dim 48 does not fit"),
                                               ({"error_feedback": False}, "error_feedback False does not fit")])
def test_a_second_stage_refuses_options_that_change_the_weights_shapes(trained_dir, train_path, tmp_path, options,
                                                                        fragment):
    with pytest.raises(TRCError, match=fragment):
        from trc_lib.interfaces import workflow
        workflow.train_model(train_path, output_dir=tmp_path / "out", start_from=trained_dir / "best_model.pt",
                             **options, **QUIET)
    assert not (tmp_path / "out").exists()


def test_guide_python_api_works_as_written(train_path, tmp_path):
    """The guide's 'Custom Training Loop', with trc_lib in place of src."""
    train_dataset, val_dataset = load_dataset(str(train_path))
    train_loader, val_loader = create_data_loaders(train_dataset, val_dataset, batch_size=64)
    model = TinyRecursiveControl.create_small()
    trained_model = train(model=model, train_loader=train_loader, val_loader=val_loader, epochs=1, lr=1e-3,
                          device="cpu", output_dir=str(tmp_path / "custom"), progress=False)
    torch.save(trained_model.state_dict(), tmp_path / "my_model.pt")
    assert (tmp_path / "custom" / "best_model.pt").exists()
    state = torch.load(tmp_path / "my_model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_runs_and_cosine_and_step_lower_the_rate(scheduler, train_path, tmp_path):
    train_loader, val_loader = create_data_loaders(*load_dataset(train_path), batch_size=128)
    train(tiny_model(), train_loader, val_loader, epochs=3, lr=1e-3, scheduler=scheduler, output_dir=tmp_path,
          **QUIET)
    rates = [h["lr"] for h in json.loads((tmp_path / "training_stats.json").read_text())["history"]]
    assert rates[0] == pytest.approx(1e-3)
    if scheduler in ("cosine", "step"):
        assert rates[-1] < rates[0]
    if scheduler == "none":
        assert rates == [1e-3] * 3


def test_unknown_scheduler_is_an_error(train_path, tmp_path):
    train_loader, val_loader = create_data_loaders(*load_dataset(train_path))
    with pytest.raises(TRCError, match="bogus"):
        train(tiny_model(), train_loader, val_loader, epochs=1, scheduler="bogus", output_dir=tmp_path, **QUIET)


def test_early_stopping_stops_after_patience_epochs_without_improvement(train_path, tmp_path):
    """With a learning rate of ~0 nothing improves after the first epoch."""
    train_loader, val_loader = create_data_loaders(*load_dataset(train_path), batch_size=128)
    train(tiny_model(), train_loader, val_loader, epochs=20, lr=1e-12, patience=2, ema_decay=0.0,
          output_dir=tmp_path, **QUIET)
    stats = json.loads((tmp_path / "training_stats.json").read_text())
    assert stats["status"] == "early_stopped"
    assert stats["epoch"] < 20


def test_resume_continues_exactly_where_an_interrupted_run_stopped(train_path, tmp_path, monkeypatch):
    """A run interrupted in epoch 3 and resumed gives the same weights and history as 4 epochs straight."""
    import trc_lib.training as training

    def run(output_dir, resume=False):
        train_loader, val_loader = create_data_loaders(*load_dataset(train_path), batch_size=64)
        return train(tiny_model(), train_loader, val_loader, epochs=4, lr=1e-3, output_dir=output_dir,
                     resume=resume, **QUIET)

    run(tmp_path / "straight")
    epoch = training._train_epoch
    calls = []

    def interrupted_in_third_epoch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return epoch(*args)

    monkeypatch.setattr(training, "_train_epoch", interrupted_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "interrupted")
    assert torch.load(tmp_path / "interrupted" / "last_model.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(training, "_train_epoch", epoch)
    run(tmp_path / "interrupted", resume=True)
    straight = torch.load(tmp_path / "straight" / "last_model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "interrupted" / "last_model.pt", weights_only=True)
    for key, value in straight["model_state"].items():
        assert torch.equal(value, resumed["model_state"][key]), key
    history = lambda d: [(h["train_loss"], h["val_loss"]) for h in
                         json.loads((tmp_path / d / "training_stats.json").read_text())["history"]]
    assert history("straight") == history("interrupted")


def test_resume_without_a_previous_run_is_a_clear_error(train_path, tmp_path):
    train_loader, val_loader = create_data_loaders(*load_dataset(train_path))
    with pytest.raises(TRCError, match="last_model.pt"):
        train(tiny_model(), train_loader, val_loader, epochs=1, output_dir=tmp_path, resume=True, **QUIET)


def test_model_for_another_problem_is_refused(train_path, tmp_path):
    train_loader, val_loader = create_data_loaders(*load_dataset(train_path))
    model = tiny_model(problem=make_problem(num_steps=10))
    with pytest.raises(TRCError, match="does not match"):
        train(model, train_loader, val_loader, epochs=1, output_dir=tmp_path, **QUIET)


def test_same_seed_reproduces_training(train_path, tmp_path):
    def run(d):
        train_loader, val_loader = create_data_loaders(*load_dataset(train_path), batch_size=64, seed=3)
        train(tiny_model(seed=3), train_loader, val_loader, epochs=1, output_dir=tmp_path / d, **QUIET)
        return torch.load(tmp_path / d / "best_model.pt", weights_only=True)["model_state"]

    a, b = run("a"), run("b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_with_foreign_pickle_is_refused(tmp_path):
    """weights_only loading refuses arbitrary objects instead of executing them."""
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "trc-checkpoint", "payload": object()}, fh)
    with pytest.raises(TRCError, match="evil.pt"):
        load_model(path)


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b"", b"PK\x03\x04garbage"])
def test_files_that_are_not_checkpoints_are_refused_by_name(tmp_path, content):
    path = tmp_path / "not_a_model.pt"
    path.write_bytes(content)
    with pytest.raises(TRCError, match="not_a_model.pt: not a readable checkpoint"):
        load_model(path)


def test_resume_refuses_changed_options_or_another_validation_split(train_path, tmp_path):
    def loaders(seed=0):
        return create_data_loaders(*load_dataset(train_path, seed=seed), batch_size=64, seed=seed)

    train(tiny_model(), *loaders(), epochs=2, output_dir=tmp_path, **QUIET)
    with pytest.raises(TRCError, match="lr: 0.001 before, 0.002 now"):
        train(tiny_model(), *loaders(), epochs=2, lr=2e-3, output_dir=tmp_path, resume=True, **QUIET)
    with pytest.raises(TRCError, match="validation_sha1"):
        train(tiny_model(), *loaders(seed=5), epochs=2, output_dir=tmp_path, resume=True, **QUIET)


def test_a_diverging_run_says_so_in_its_stats(train_path, tmp_path):
    train_loader, val_loader = create_data_loaders(*load_dataset(train_path), batch_size=64)
    model = tiny_model()
    torch.nn.init.constant_(model.decode.weight, float("nan"))
    with pytest.raises(TRCError, match="diverged at epoch 1"):
        train(model, train_loader, val_loader, epochs=3, output_dir=tmp_path, **QUIET)
    assert json.loads((tmp_path / "training_stats.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize("x0, xt, fragment", [
    (np.zeros(2), np.zeros(2), r"initial_states must have shape \[B, 2\], got \[2\]"),
    (np.zeros((3, 2)), np.zeros((2, 2)), "hold 3 and 2 problems"),
    (np.full((1, 2), np.nan), np.zeros((1, 2)), "initial_states contains NaN"),
    (np.zeros((1, 2)), np.array([[0.0, -np.inf]]), "target_states contains NaN or inf"),
    (np.zeros((20, 2)), np.pad([[np.inf, 0.0]], ((19, 0), (0, 0))), "target_states contains NaN or inf"),  # many: numpy's check
    (np.zeros((1, 3)), np.zeros((1, 3)), r"got \[1, 3\]"),
])
def test_predict_refuses_inputs_of_the_wrong_shape_or_nan(trained_dir, x0, xt, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_model(trained_dir / "best_model.pt").predict(x0, xt)


def test_predict_accepts_lists_and_float32(trained_dir):
    model = load_model(trained_dir / "best_model.pt")
    a = model.predict([[0.5, 0.1]], [[1.0, 0.0]])
    b = model.predict(np.array([[0.5, 0.1]], np.float32), np.array([[1.0, 0.0]], np.float32))
    np.testing.assert_allclose(a, b)
