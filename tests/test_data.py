"""Datasets: generated exactly and reproducibly, saved atomically, refused clearly when bad."""

import json
import os

import numpy as np
import pytest
import torch

from trc_lib.oracles import closed_form
from trc_lib.data import (ARRAY_KEYS, DATASET_FILENAME, FORMAT_VERSION, BatchLoader, ControlDataset, create_data_loaders,
                          generate_dataset, load_dataset, make_problem, read_dataset, save_dataset)
from trc_lib.errors import TRCError


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module")
def small(problem):
    return generate_dataset(problem, 60, seed=5)


def contents_of(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def write_npz(path, contents):
    with open(path, "wb") as fh:
        np.savez(fh, **contents)
    return path


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------

def test_generated_dataset_has_the_guides_arrays_and_shapes(small):
    assert len(small) == 60
    assert small.initial_states.shape == (60, 2)
    assert small.target_states.shape == (60, 2)
    assert small.control_sequences.shape == (60, 15, 1)
    assert small.state_trajectories.shape == (60, 16, 2)
    assert small.costs.shape == (60,)
    for key in ARRAY_KEYS:
        assert getattr(small, key).dtype == np.float64
    assert np.all((small.initial_states >= -2) & (small.initial_states <= 2))
    assert np.all((small.target_states >= -2) & (small.target_states <= 2))


def test_generated_metadata_states_the_problem_and_the_sampling(small):
    meta = small.metadata
    assert meta["problem"]["dt"] == 5.0 / 15
    assert meta["problem"]["num_steps"] == 15
    assert meta["problem"]["control_bounds"] == [[-4.0, 4.0]]
    assert meta["problem"]["objective"]["name"] == "min_energy"
    assert meta["problem"]["objective"]["terminal_constraint"] is True
    assert meta["initial_box"] == [[-2.0, 2.0]] * 2
    assert meta["target_box"] == [[-2.0, 2.0]] * 2 and meta["target"] == [0.0, 0.0]
    assert meta["seed"] == 5
    assert meta["num_samples"] == 60
    assert isinstance(meta["num_redrawn"], int) and meta["num_redrawn"] >= 0
    from trc_lib import __version__
    assert meta["trc_lib_version"] == __version__
    json.dumps(meta)  # the metadata must be storable as JSON


def test_generated_labels_are_the_oracles_solution(small, problem):
    solution = closed_form.solve(problem, small.initial_states, small.target_states)
    np.testing.assert_array_equal(small.control_sequences, solution.control_sequences)
    np.testing.assert_array_equal(small.costs, solution.costs)
    np.testing.assert_allclose(small.state_trajectories[:, -1], small.target_states, atol=1e-8)


def test_same_seed_gives_identical_arrays_and_another_seed_differs(problem, small):
    again = generate_dataset(problem, 60, seed=5)
    other = generate_dataset(problem, 60, seed=6)
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(getattr(again, key), getattr(small, key))
    assert not np.array_equal(other.initial_states, small.initial_states)
    assert not np.array_equal(other.target_states, small.target_states)


def test_unreachable_pairs_are_redrawn_on_a_wide_box(problem):
    wide = generate_dataset(problem, 300, seed=3, state_range=(-5.0, 5.0))
    assert len(wide) == 300
    assert wide.metadata["num_redrawn"] > 0
    assert wide.metadata["num_bound_active"] > 0
    assert (closed_form.reachability_margin(problem, wide.initial_states, wide.target_states) > 1e-6).all()
    assert np.abs(wide.state_trajectories[:, -1] - wide.target_states).max() < 1e-8
    assert np.abs(wide.control_sequences).max() <= 4.0 + 1e-12


def test_target_range_is_separate_from_state_range(problem):
    ds = generate_dataset(problem, 50, seed=1, state_range=(-1.0, 1.0), target_range=(2.0, 3.0))
    assert np.all(np.abs(ds.initial_states) <= 1.0)
    assert np.all((ds.target_states >= 2.0) & (ds.target_states <= 3.0))
    assert ds.metadata["target_box"] == [[2.0, 3.0]] * 2


@pytest.mark.parametrize("kwargs", [dict(state_range=(2.0, -2.0)), dict(state_range=(1.0, 1.0)),
                                    dict(target_range=(0.0, float("inf"))), dict(num_samples=0),
                                    dict(num_samples=2.5)])
def test_generate_rejects_bad_settings(problem, kwargs):
    with pytest.raises(ValueError):
        generate_dataset(problem, **{"num_samples": 10, **kwargs})


def test_generate_refuses_boxes_where_almost_nothing_is_reachable(problem):
    with pytest.raises(ValueError, match="reachable"):
        generate_dataset(problem, 10, seed=0, state_range=(-1.0, 1.0), target_range=(500.0, 600.0))


def test_make_problem_rejects_unknown_controllers():
    with pytest.raises(ValueError, match="unknown controller"):
        make_problem(controller="mpc")


# ---------------------------------------------------------------------------------------------
# save and read
# ---------------------------------------------------------------------------------------------

def test_save_then_read_roundtrips_arrays_and_metadata(small, tmp_path):
    path = save_dataset(small, tmp_path / "sub" / DATASET_FILENAME)
    assert path.is_file()
    back = read_dataset(path)
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(getattr(back, key), getattr(small, key))
    assert back.metadata == small.metadata
    assert back.path == str(path)
    assert back.problem == small.problem


def test_save_leaves_no_temporary_files(small, tmp_path):
    save_dataset(small, tmp_path / DATASET_FILENAME)
    save_dataset(small, tmp_path / DATASET_FILENAME)  # overwriting too
    assert os.listdir(tmp_path) == [DATASET_FILENAME]


def test_read_accepts_a_directory_holding_the_dataset(test_path):
    ds = read_dataset(test_path.parent)
    assert len(ds) == 100
    assert ds.path == str(test_path)


def test_read_missing_file_names_it(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(TRCError, match="nowhere.npz.*no such dataset file"):
        read_dataset(missing)


def test_read_corrupt_file_names_it(tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(TRCError, match="corrupt.npz: not a .npz dataset"):
        read_dataset(bad)


def test_read_truncated_file_names_it(test_path, tmp_path):
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(test_path.read_bytes()[:3000])
    with pytest.raises(TRCError, match="truncated.npz"):
        read_dataset(bad)


def test_read_refuses_a_missing_key(test_path, tmp_path):
    contents = contents_of(test_path)
    del contents["costs"]
    path = write_npz(tmp_path / "nokey.npz", contents)
    with pytest.raises(TRCError, match=r"nokey.npz.*missing keys \['costs'\]"):
        read_dataset(path)


def test_read_refuses_a_wrong_shape(test_path, tmp_path):
    contents = contents_of(test_path)
    contents["control_sequences"] = contents["control_sequences"][:, :10]
    path = write_npz(tmp_path / "shape.npz", contents)
    with pytest.raises(TRCError, match="shape.npz.*'control_sequences' has shape"):
        read_dataset(path)


def test_read_refuses_nan(test_path, tmp_path):
    contents = contents_of(test_path)
    contents["target_states"][3, 1] = np.nan
    path = write_npz(tmp_path / "nan.npz", contents)
    with pytest.raises(TRCError, match="nan.npz.*'target_states' contains NaN"):
        read_dataset(path)


def test_read_refuses_labels_that_are_not_optimal(test_path, tmp_path):
    contents = contents_of(test_path)
    contents["control_sequences"][0, 0, 0] += 1e-3
    path = write_npz(tmp_path / "perturbed.npz", contents)
    with pytest.raises(TRCError, match="perturbed.npz.*not the exact optimum"):
        read_dataset(path)
    # the check is what refuses it: without it the file reads
    assert len(read_dataset(path, verify_labels=False)) == 100


def test_read_refuses_labels_of_another_problem(test_path, tmp_path):
    """Metadata edited to another control bound: the labels no longer fit what the file states."""
    contents = contents_of(test_path)
    meta = json.loads(str(contents["metadata"]))
    meta["problem"] = make_problem(controller="lqr", lqr_R=(1.0,)).to_dict()
    contents["metadata"] = np.array(json.dumps(meta))
    path = write_npz(tmp_path / "other.npz", contents)
    with pytest.raises(TRCError, match="other.npz.*not the exact optimum"):
        read_dataset(path)


@pytest.mark.parametrize("metadata", ["not json {", json.dumps({"format_version": FORMAT_VERSION}),
                                      json.dumps({"format_version": FORMAT_VERSION, "problem": {"system": {}}})])
def test_read_refuses_unreadable_metadata(test_path, tmp_path, metadata):
    contents = contents_of(test_path)
    contents["metadata"] = np.array(metadata)
    path = write_npz(tmp_path / "meta.npz", contents)
    with pytest.raises(TRCError, match="meta.npz.*unreadable metadata"):
        read_dataset(path)


def test_read_refuses_another_format_version(test_path, tmp_path):
    contents = contents_of(test_path)
    meta = json.loads(str(contents["metadata"]))
    contents["metadata"] = np.array(json.dumps({**meta, "format_version": 99}))
    path = write_npz(tmp_path / "version.npz", contents)
    with pytest.raises(TRCError, match="version.npz.*format version 99"):
        read_dataset(path)


# ---------------------------------------------------------------------------------------------
# split and batch
# ---------------------------------------------------------------------------------------------

def rows(a):
    return {tuple(r) for r in np.asarray(a).reshape(len(a), -1)}


def test_load_dataset_splits_ninety_ten_without_overlap(train_path):
    train, val = load_dataset(train_path)
    assert (len(train), len(val)) == (360, 40)
    full = read_dataset(train_path)
    pairs = lambda d: rows(np.hstack([d.initial_states, d.target_states]))
    assert not pairs(train) & pairs(val)
    assert pairs(train) | pairs(val) == pairs(full)
    assert train.metadata == full.metadata


def test_load_dataset_split_is_deterministic_and_seeded(train_path):
    a_train, a_val = load_dataset(train_path, seed=0)
    b_train, b_val = load_dataset(train_path, seed=0)
    np.testing.assert_array_equal(a_val.initial_states, b_val.initial_states)
    np.testing.assert_array_equal(a_train.initial_states, b_train.initial_states)
    _, c_val = load_dataset(train_path, seed=1)
    assert rows(c_val.initial_states) != rows(a_val.initial_states)


def test_load_dataset_rejects_a_bad_fraction(train_path):
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset(train_path, val_fraction=1.0)


def test_batch_loader_yields_every_sample_once_per_epoch(test_set):
    loader = BatchLoader(test_set, batch_size=32, shuffle=True, seed=0)
    assert len(loader) == 4
    for _ in range(2):
        batches = list(loader)
        assert [len(b[0]) for b in batches] == [32, 32, 32, 4]
        for x0, xt, u in batches:
            assert x0.shape[1:] == (2,) and xt.shape[1:] == (2,) and u.shape[1:] == (15, 1)
            assert x0.dtype == xt.dtype == u.dtype == torch.float32
        x0 = torch.cat([b[0] for b in batches]).numpy()
        u = torch.cat([b[2] for b in batches]).numpy()
        assert len(rows(x0)) == 100
        assert rows(x0) == rows(test_set.initial_states.astype(np.float32))
        assert rows(u) == rows(test_set.control_sequences.astype(np.float32))
        # the triples stay aligned: each x0 comes with its own controls
        index = {tuple(r): i for i, r in enumerate(test_set.initial_states.astype(np.float32))}
        order = [index[tuple(r)] for r in x0]
        np.testing.assert_array_equal(u, test_set.control_sequences[order].astype(np.float32))


def test_batch_loader_shuffling_is_reproducible_and_varies_between_epochs(test_set):
    first_epoch = lambda loader: torch.cat([b[0] for b in loader])
    a, b = BatchLoader(test_set, 16, shuffle=True, seed=3), BatchLoader(test_set, 16, shuffle=True, seed=3)
    epoch_a1, epoch_b1 = first_epoch(a), first_epoch(b)
    assert torch.equal(epoch_a1, epoch_b1)
    assert torch.equal(first_epoch(a), first_epoch(b))              # second epochs agree too
    assert not torch.equal(first_epoch(a), epoch_a1)                 # but differ from the first
    other = first_epoch(BatchLoader(test_set, 16, shuffle=True, seed=4))
    assert not torch.equal(other, epoch_a1)


def test_unshuffled_loader_keeps_the_file_order(test_set):
    x0 = torch.cat([b[0] for b in BatchLoader(test_set, 7)])
    np.testing.assert_array_equal(x0.numpy(), test_set.initial_states.astype(np.float32))


def test_batch_loader_rejects_a_bad_batch_size(test_set):
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(test_set, batch_size=0)


def test_create_data_loaders_shuffles_training_only(train_path):
    train, val = load_dataset(train_path)
    train_loader, val_loader = create_data_loaders(train, val, batch_size=50, seed=0)
    assert train_loader.shuffle and not val_loader.shuffle
    assert train_loader.batch_size == 50
    assert sum(len(b[0]) for b in train_loader) == 360
    assert sum(len(b[0]) for b in val_loader) == 40


def test_subset_keeps_metadata_and_selects_rows(small):
    part = small.subset(np.array([4, 1]))
    assert isinstance(part, ControlDataset)
    np.testing.assert_array_equal(part.costs, small.costs[[4, 1]])
    assert part.metadata is small.metadata


def test_cached_data_with_another_target_range_does_not_match(tmp_path):
    from trc_lib.interfaces import workflow
    workflow.generate(tmp_path, num_samples=50, seed=42, target_range=(-0.5, 0.5), log=lambda *_: None)
    settings = dict(num_samples=50, seed=42, state_range=(-2.0, 2.0), num_steps=15, time_horizon=5.0,
                    control_bound=4.0, controller="min_energy")
    assert not workflow.dataset_matches(tmp_path / "lqr_dataset.npz", **settings)
    assert workflow.dataset_matches(tmp_path / "lqr_dataset.npz", **settings, target_range=(-0.5, 0.5))
