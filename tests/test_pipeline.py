"""`trc pipeline`: the guide's train.sh, end to end on a tiny run."""

import json

from trc_lib.cli import main


def test_pipeline_writes_every_file_and_reuses_existing_data(tmp_path, capsys):
    argv = ["pipeline", "200", "1", "small", "--test_samples", "50", "--data_dir", str(tmp_path / "data"),
            "--output_dir", str(tmp_path / "out"), "--no_progress", "--device", "cpu"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "generating 200 samples" in first and "generating 50 samples" in first
    for name in ("best_model.pt", "last_model.pt", "training_stats.json", "training_curves.png",
                 "evaluation_results.json", "comparison_results.json"):
        assert (tmp_path / "out" / name).exists(), name
    names = [row["name"] for row in json.loads((tmp_path / "out" / "comparison_results.json").read_text())["controllers"]]
    assert names[:3] == ["random", "zero", "least squares (linear)"] and names[-2:] == ["TRC", "oracle (exact QP)"]

    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "generating" not in second and second.count("not regenerated") == 2


def test_pipeline_regenerates_data_made_with_other_settings(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["generate", "--num_samples", "100", "--output_dir", str(data / "lqr_train")]) == 0
    assert main(["generate", "--num_samples", "50", "--seed", "123", "--output_dir", str(data / "lqr_test")]) == 0
    capsys.readouterr()
    assert main(["pipeline", "300", "1", "small", "--test_samples", "50", "--data_dir", str(data),
                 "--output_dir", str(tmp_path / "out"), "--no_progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "generating 300 samples" in out and out.count("not regenerated") == 1
