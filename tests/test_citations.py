"""Every file the README, the docs, the notebooks, the benchmarks and the code cite exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the user's original guide (docs/TRAINING_GUIDE.md) is quoted as written: it names its own project's files
SOURCES = ["README.md", "docs/*.md", "docs/results/*.md", "notebooks/*.ipynb", "notebooks/*.py", "benchmarks/*.py",
           "trc_lib/**/*.py", "trc_lib/**/*.c", "Makefile", ".ci/run"]
CITATION = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w-]+\.(?:py|md|ipynb|c))\b")
# the guide's own files (docs/cli.md maps each to its command here), and names that stand for a user's file
GUIDE_FILES = {"comparison_experiment.py", "src/data/lqr_generator.py", "src/evaluation/evaluator.py",
               "src/training/supervised_trainer.py", "supervised_trainer.py", "lqr_generator.py", "evaluator.py"}
NOT_FILES = GUIDE_FILES | {"FILE.py", "my_task.py", "unicycle.py", "file.py", "path/to/file.py", "docs/results/NAME.md",
                           "docs/results/frontier_TASK_CLASS.md", "docs/results/anchors_TASK.md", "my_rewards.py",
                           "rewards.py"}  # benchmarks/reward_finetune.py writes it under outputs/


def cited(path: Path) -> set[str]:
    return set(CITATION.findall(path.read_text(errors="replace")))


def exists(name: str, where: Path) -> bool:
    if "/" not in name:  # a bare name: some file of the repository has it
        return any(ROOT.rglob(name))
    bases = [ROOT, ROOT / "trc_lib", where.parent, ROOT / "benchmarks"]
    return any((base / name).exists() for base in bases) or any(
        p.as_posix().endswith("/" + name) for p in ROOT.rglob(Path(name).name))


def test_every_cited_file_exists():
    missing = []
    for pattern in SOURCES:
        for path in ROOT.glob(pattern):
            if "outputs" in path.parts or ".venv" in path.parts or path.name == "TRAINING_GUIDE.md":
                continue
            for name in cited(path):
                if name in NOT_FILES or name.startswith(("outputs/", "data/", "http")) or "<" in name:
                    continue
                if not exists(name, path):
                    missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "\n".join(sorted(missing))
