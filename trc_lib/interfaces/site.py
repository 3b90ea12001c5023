"""The rendered tutorial: a static site of the executed notebooks and the docs pages (`make docs`).

    python -m trc_lib.interfaces.site [--output build/site] [--notebooks 05_explore_trajectories ...]

Every notebook runs headless with its quick defaults (papermill) in a fresh workspace, so the
build never touches the repository's data/ or outputs/; the executed copies, README.md (as the
home page) and docs/ (the model, oracle, CLI and LLM pages and the benchmarks' results pages)
are staged under build/docs, and MkDocs with mkdocs-jupyter renders them, figures included, into
a site to open in any browser (build/site/index.html) or to publish.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import TRCError
from .notebook import REPO_ROOT
from .pipeline import NOTEBOOKS_DIR, run_notebook

CELL_TIMEOUT = 900  # seconds: the quick defaults take seconds per cell; a stuck kernel fails the build

PAGES = {"The model": "model.md", "Problems, oracles, metrics": "oracle.md", "Your own system": "your_system.md",
         "The command line": "cli.md", "Compare with your LLM": "llm.md", "Several machines": "cluster.md",
         "Troubleshooting": "troubleshooting.md", "The original training guide": "TRAINING_GUIDE.md"}
# code and its printed output wrap at the page's width instead of scrolling sideways
WRAP_CSS = """.jp-InputArea pre, .jp-OutputArea pre, .highlight pre, pre code {
  white-space: pre-wrap; overflow-wrap: anywhere; overflow-x: hidden;
}
"""


def build_site(output="build/site", notebooks=None, progress=True, log=print) -> Path:
    """Build the site into `output` (a folder; replaced); returns its index.html.

    notebooks: names of the notebooks to render (default: every one in notebooks/), each run
    with its default parameters in a temporary workspace.
    """
    output = Path(output).resolve()
    available = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    chosen = available if notebooks is None else [Path(n).stem for n in notebooks]
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise TRCError(f"notebooks: no such notebook {unknown}; there are {available}")
    if output.exists() and not output.is_dir():
        raise TRCError(f"output: {output} is a file, not a folder")
    staging = output.parent / (output.name + "-source")
    shutil.rmtree(staging, ignore_errors=True)
    _stage_pages(staging)
    with tempfile.TemporaryDirectory(prefix="trc-site-") as workspace:
        saved = os.environ.get("TRC_WORKSPACE")
        os.environ["TRC_WORKSPACE"] = workspace  # the kernels inherit it: nothing lands in the repository
        try:
            for name in chosen:
                log(f"running {name}.ipynb")
                run_notebook(NOTEBOOKS_DIR / f"{name}.ipynb", {}, staging / "docs" / "notebooks" / f"{name}.ipynb",
                             progress, cell_timeout=CELL_TIMEOUT)
        finally:
            if saved is None:
                os.environ.pop("TRC_WORKSPACE")
            else:
                os.environ["TRC_WORKSPACE"] = saved
    config = _write_config(staging, output, chosen)
    # run from the staging folder: mkdocs-jupyter keeps its cache in the working directory's .cache/
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--clean", "-f", str(config)],
                          capture_output=True, text=True, cwd=staging)
    if done.returncode:
        raise TRCError(f"mkdocs build failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}")
    log(f"wrote {output / 'index.html'}")
    return output / "index.html"


def _stage_pages(staging: Path) -> None:
    """README.md as the home page (its links into docs/ made relative) and a copy of docs/."""
    shutil.copytree(REPO_ROOT / "docs", staging / "docs")
    home = (REPO_ROOT / "README.md").read_text().replace("](docs/", "](")
    (staging / "docs" / "index.md").write_text(home)
    (staging / "docs" / "wrap.css").write_text(WRAP_CSS)


def _write_config(staging: Path, output: Path, notebooks: list[str]) -> Path:
    """mkdocs.yml for the staged pages: the home page, the docs pages, the results, the notebooks."""
    results = sorted((staging / "docs" / "results").glob("*.md"))
    lines = ["site_name: TinyRecursiveControl", f"docs_dir: {staging / 'docs'}", f"site_dir: {output}",
             "use_directory_urls: false", "theme:", "  name: material", "  font: false", "extra_css:", "  - wrap.css",
             "plugins:", "  - mkdocs-jupyter:",
             "      execute: false", "      include_source: true", "nav:", "  - Home: index.md",
             "  - Notebooks:"]
    lines += [f"    - '{name}': notebooks/{name}.ipynb" for name in notebooks]
    lines += [f"  - '{title}': {page}" for title, page in PAGES.items()]
    lines += ["  - Results:"] + [f"    - '{page.stem}': results/{page.name}" for page in results]
    config = staging / "mkdocs.yml"
    config.write_text("\n".join(lines) + "\n")
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trc_lib.interfaces.site", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="build/site", help="folder for the site (default: %(default)s)")
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="NAME",
                        help="render only these notebooks, e.g. 05_explore_trajectories (default: all)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        build_site(args.output, args.notebooks, progress=not args.no_progress)
    except TRCError as e:
        print(f"trc docs: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
