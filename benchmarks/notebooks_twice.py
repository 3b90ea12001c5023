"""Check: every notebook runs top to bottom twice in a row in one kernel, and again after a restart,
with the same results.

    python benchmarks/notebooks_twice.py [--notebooks 01_generate_data 02_train ...]

For each numbered notebook, with its default (quick) parameters, in a fresh workspace shared by
all of them (so 03 finds what 01 and 02 left, as for a user who runs them in order):
  run 1  every cell, in a new kernel;
  run 2  every cell again in that same kernel (Run All twice, without a restart);
  run 3  every cell in a new kernel (Restart & Run All).
The printed text of each code cell (its stdout and its results; not figures, widgets or stderr,
where progress bars go) is compared between the runs, after masking durations (a number followed
by a unit of time) and the paths of the temporary workspace. Writes
docs/results/notebooks_twice.md with each notebook's verdict and every line that differs.
Nothing is asserted: the page lists the differences for a reader to judge.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import re
import tempfile
import time
from pathlib import Path

from results_page import write_page

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TIME = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?\s*(ms|µs|us|ns|s|min|seconds?|minutes?|s/it|it/s|"
                  r"s/cell|problem/s|problems/s)\b")


def cell_texts(cell: dict) -> str:
    """What a code cell printed: stdout and text results, durations and the workspace masked."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream" and output["name"] == "stdout":
            parts.append("".join(output["text"]))
        elif output["output_type"] in ("execute_result", "display_data"):
            data = output.get("data", {})
            if "text/plain" in data and not {"image/png", "application/vnd.jupyter.widget-view+json"} & set(data):
                parts.append("".join(data["text/plain"]))
        elif output["output_type"] == "error":
            parts.append(f"ERROR {output['ename']}: {output['evalue']}")
    text = TIME.sub("<duration>", mask_timed_columns("\n".join(parts)))
    return re.sub(r"/tmp/[\w./-]*", "<path>", text)


def mask_timed_columns(text: str) -> str:
    """In a markdown table, the columns whose header names a time (ms, us, µs, time) are masked."""
    lines, timed = text.splitlines(), set()
    for index, line in enumerate(lines):
        if not line.startswith("|"):
            timed = set()
            continue
        cells = line.split("|")
        if index + 1 < len(lines) and lines[index + 1].startswith("|---"):  # a header row
            timed = {i for i, c in enumerate(cells) if re.search(r"\b(ms|us|µs|time)\b", c)}
        elif not line.startswith("|---"):
            lines[index] = "|".join("<duration>" if i in timed else c for i, c in enumerate(cells))
    return "\n".join(lines)


def run(notebook: dict, path: Path, workspace: str, repeat: int) -> list[str]:
    """Execute the notebook's code cells `repeat` times over in one kernel; each pass's printed text."""
    import papermill

    from trc_lib.interfaces.kernels import PatientKernelManager

    doubled = copy.deepcopy(notebook)
    doubled["cells"] = [copy.deepcopy(c) for _ in range(repeat) for c in notebook["cells"]]
    for index, cell in enumerate(doubled["cells"]):
        cell["id"] = f"cell-{index}"
    with tempfile.TemporaryDirectory() as folder:
        source, executed = Path(folder) / path.name, Path(folder) / ("executed_" + path.name)
        source.write_text(json.dumps(doubled))
        os.environ["TRC_WORKSPACE"] = workspace
        papermill.execute_notebook(str(source), str(executed), kernel_name="python3", progress_bar=False,
                                   cwd=str(path.parent), kernel_manager_class=PatientKernelManager)
        cells = json.loads(executed.read_text())["cells"]
    size = len(notebook["cells"])
    return [[cell_texts(c) for c in cells[i * size:(i + 1) * size] if c["cell_type"] == "code"
             and "injected-parameters" not in c["metadata"].get("tags", [])] for i in range(repeat)]


# lines that only say what became of a file: written (a dataset, a model's training log), reused,
# replaced or rewritten
FILE_MESSAGE = re.compile(r"^(wrote <path>|using <path>|replacing the earlier run in <path>|Writing <path>|"
                          r"Overwriting <path>|no model at <path>|training on \w+ \(\d+ threads?\); [\d,]+ parameters$|"
                          r"best validation loss .* files in <path>$)")


def differences(a: list[str], b: list[str]) -> tuple[list[str], int]:
    """(the lines that differ between a's cells and b's, each named by its code cell; how many lines
    only say that a file was reused, replaced or rewritten, FILE_MESSAGE)."""
    lines, messages = [], 0
    for index, (x, y) in enumerate(zip(a, b)):
        for line in difflib.ndiff(x.splitlines(), y.splitlines()):
            if line[:2] not in ("- ", "+ ") or not line[2:].strip():
                continue
            if FILE_MESSAGE.match(line[2:]):
                messages += 1
            else:
                lines.append(f"code cell {index + 1}: {'first run' if line[0] == '-' else 'other run'}: "
                             f"`{line[2:].strip()[:160]}`")
    return lines, messages


def verdict(lines: list[str], reused: int) -> str:
    text = "same" if not lines else f"**{len(lines)} lines differ**"
    return text + (f" ({reused} lines about files reused or replaced)" if reused else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", nargs="+", default=None, help="names without .ipynb (default: all numbered)")
    args = parser.parse_args()
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.stem in args.notebooks]
    workspace = tempfile.mkdtemp(prefix="trc-twice-")
    rows, details = [], []
    for path in paths:
        notebook = json.loads(path.read_text())
        start = time.perf_counter()
        first, second = run(notebook, path, workspace, repeat=2)
        (third,) = run(notebook, path, workspace, repeat=1)
        (again, reused_again), (restarted, reused_restarted) = differences(first, second), differences(first, third)
        rows.append(f"| `{path.name}` | {verdict(again, reused_again)} | {verdict(restarted, reused_restarted)} | "
                    f"{time.perf_counter() - start:.0f} s |")
        print(rows[-1], flush=True)
        for title, lines in (("run twice in one kernel", again), ("after a restart", restarted)):
            if lines:
                details += [f"### `{path.name}`, {title}", "", *[f"- {line}" for line in lines], ""]
    body = ["| notebook | Run All again in the same kernel | Restart & Run All | time for the three runs |",
            "|---|---|---|---|", *rows, ""]
    body += ["## The lines that differ", "", *details] if details else \
        ["Every code cell printed the same text in the three runs."]
    intro = ("Each numbered notebook with its default parameters, in one fresh workspace for all of them: every "
             "cell, every cell again in the same kernel, then every cell in a new kernel. The printed text of "
             "each code cell is compared after masking durations (a number with a unit of time, a table column "
             "headed by one) and temporary paths. Lines that only say what became of a file an earlier run wrote "
             "(`wrote`, `using`, `replacing the earlier run in`, `Overwriting`, a training's first and last "
             "lines) are counted apart, not as differences.")
    write_page("notebooks_twice", "Notebooks run twice in one kernel, and after a restart",
               "\n".join([intro, "", *body]))


if __name__ == "__main__":
    main()
