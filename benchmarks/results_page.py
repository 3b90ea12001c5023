"""Each benchmark writes its results page here: docs/results/NAME.md, never edited by hand.

A page starts with what produced it: the command, the hardware, the date and the code version
(the commit, marked "+ uncommitted changes" when the tree differed from it), then the body the
benchmark printed. Figures are copied beside it as NAME_*.png.
"""

from __future__ import annotations

import datetime
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from trc_lib.evaluate import hardware
from trc_lib.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def code_version() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "trc_lib", "benchmarks")
    return commit + (" + uncommitted changes" if dirty else "")


def cpu_features() -> str:
    """The CPU flags that choose a path (fast/forward.py's paths), and the absence of the big ones."""
    from trc_lib.fast.c_library import PATH_FLAGS, cpu_flags
    flags = cpu_flags()
    named = [f for f in PATH_FLAGS if f in flags]
    missing = [label for label, flag in (("AVX-512", "avx512f"), ("AVX512_BF16", "avx512_bf16"), ("AMX", "amx_tile"))
               if flag not in flags]
    return " ".join(named) + ("; no " + ", no ".join(missing) if missing else "")


def cpu_class() -> str:
    """The CPU's class by its flags, for pages kept per class side by side: amx (AMX tiles),
    avx512 (AVX-512 without AMX), avx2, or baseline."""
    from trc_lib.fast.c_library import cpu_flags
    flags = cpu_flags()
    return next((name for name, flag in (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2")) if flag in flags),
                "baseline")


def describe_hardware() -> str:
    h = hardware()
    gpu = f", GPU {h['gpu']}" if h["gpu"] else ", no GPU"
    return (f"{h['cpu']} ({cpu_features()}), {h['cpu_count']} cores{gpu}; "
            f"torch {h['torch']} with {h['torch_threads']} threads")


def write_page(name: str, title: str, body: str, figures: dict[str, Path] | None = None) -> Path:
    """Write docs/results/NAME.md (atomically) with its provenance, and copy figures {suffix: png}."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                      and ROOT in Path(sys.argv[0]).parents else sys.argv[0], *sys.argv[1:]])
    links = []
    for suffix, figure in (figures or {}).items():
        target = RESULTS / f"{name}_{suffix}.png"
        shutil.copyfile(figure, target)
        links.append(f"![{suffix}]({target.name})")
    header = [f"# {title}", "",
              f"- Command: `{command}`",
              f"- Hardware: {describe_hardware()}",
              f"- Date: {datetime.date.today().isoformat()}",
              f"- Code version: {code_version()}", ""]
    page = RESULTS / f"{name}.md"
    with atomic_path(page) as tmp:
        tmp.write_text("\n".join(header + [body.rstrip(), ""] + links) + "\n")
    print(f"(results page: {page.relative_to(ROOT)})")
    return page
