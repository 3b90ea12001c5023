"""environment.yml (conda users) lists the same dependencies as pyproject.toml (pip users)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def names(requirements):
    return {re.split(r"[<>=!~ \[]", r.strip(), maxsplit=1)[0].lower() for r in requirements}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = names(project["dependencies"]) | names(sum(project["optional-dependencies"].values(), []))
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_section = lines[[l.strip() for l in lines].index("- pip:") + 1:]
    listed = names(l.strip()[2:] for l in pip_section if l.strip().startswith("- ") and "-e " not in l)
    assert listed == declared


def test_torch_is_pinned_where_the_project_installs_it():
    """An unpinned torch pulls several GB of CUDA packages on a CPU machine."""
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()
    assert re.search(r"^TORCH\s*\?=\s*torch==2\.13\.0", (ROOT / "Makefile").read_text(), re.M)
