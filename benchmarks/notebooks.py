"""Benchmark: wall time of each notebook's default run, headless, in a fresh workspace.

    python benchmarks/notebooks.py

Runs every notebook in order through papermill (default parameters) with $TRC_WORKSPACE set
to a new temporary folder, and prints a markdown table of wall times (kernel start included).
"""

import os
import tempfile
import time
from pathlib import Path

from trc_lib.evaluate import hardware
from trc_lib.interfaces.pipeline import NOTEBOOKS_DIR, run_notebook

from results_page import write_page

CELL_TIMEOUT = 600  # s: the slowest default cell takes well under a minute


def main():
    workspace = Path(tempfile.mkdtemp(prefix="trc-notebook-benchmark-"))
    os.environ["TRC_WORKSPACE"] = str(workspace)
    rows = []
    for notebook in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        started = time.perf_counter()
        # a cell limit turns papermill's occasional wait on an idle kernel into an error, not a hang
        run_notebook(notebook, {}, workspace / "executed" / notebook.name, progress=False, cell_timeout=CELL_TIMEOUT)
        rows.append((notebook.stem, time.perf_counter() - started))
        print(f"{notebook.stem}: {rows[-1][1]:.1f} s", flush=True)
    hw = hardware()
    lines = [f"Default run of each notebook, in order, fresh workspace; {hw['cpu']}, {hw['cpu_count']} cores", "",
             "| notebook | wall time |", "|---|---|", *(f"| {name} | {seconds:.1f} s |" for name, seconds in rows)]
    print("\n" + "\n".join(lines))
    write_page("notebooks", "Notebook run times", "\n".join(lines))


if __name__ == "__main__":
    main()
