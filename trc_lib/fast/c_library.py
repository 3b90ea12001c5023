"""C compiled once per machine into a shared library, cached by content, loaded with ctypes.

compiled_rollout.py (the rollout CasADi generates) and forward.py (forward.c) both build C at
run time with the system's compiler ($CC, else `cc` or `gcc`). A library is named by the hash of
its source, its flags and anything else it depends on (the CPU, for -march=native), and written
under $TRC_CACHE_DIR (default ~/.cache/trc_lib) through a temporary file and a rename, so
concurrent processes never load half a file. Without a working compiler the caller falls back
to PyTorch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path


def target() -> str:
    """The instruction set the C is compiled for: $TRC_MARCH (gcc's -march names: x86-64 is the
    baseline without AVX, x86-64-v3 adds AVX2 and FMA, x86-64-v4 AVX-512), default `native`, this
    CPU's own. Forcing the baseline checks that every CPU's path gives the same answers."""
    return os.environ.get("TRC_MARCH", "native")


def native_flags() -> tuple[str, ...]:
    """Flags for the target's vector units; pass cpu_identity() as depends_on."""
    return ("-O3", f"-march={target()}")


def cpu_flags() -> set[str]:
    """This CPU's feature flags as Linux reports them (avx2, avx512f, avx512_bf16, amx_tile, ...);
    empty where /proc/cpuinfo is not there. What the fast paths choose by, never the CPU's name."""
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.partition(":")[2].split())


# the flags that choose a path (trc info, the results pages' headers)
PATH_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def bfloat16_units() -> set[str]:
    """This CPU's bfloat16 matrix instructions (avx512_bf16, amx_bf16): what makes bfloat16 fast."""
    return {"avx512_bf16", "amx_bf16"} & cpu_flags()


def cpu_identity() -> str:
    """What the target compiles for: a library built on one CPU may not run on another."""
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [line for line in fh if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    return platform.machine() + target() + "".join(lines)


def cache_dir() -> Path:
    return Path(os.environ.get("TRC_CACHE_DIR", Path.home() / ".cache" / "trc_lib"))


def compiled_library(source: str, name: str, flags: tuple[str, ...] = ("-O2",), depends_on: str = "") -> ctypes.CDLL | None:
    """The library built from C `source` (cached as NAME_<hash>.so); None without a working compiler."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None
    digest = hashlib.sha256("\n".join([source, *flags, depends_on]).encode()).hexdigest()[:16]
    library = cache_dir() / f"{name}_{digest}.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="trc-cc-") as folder:
            c_file, built = Path(folder, f"{name}.c"), Path(folder, f"{name}.so")
            c_file.write_text(source)
            try:
                done = subprocess.run([compiler, *flags, "-fPIC", "-shared", str(c_file), "-o", str(built), "-lm"],
                                      capture_output=True, text=True)
            except OSError:  # $CC names no program
                return None
            if done.returncode != 0:
                return None
            partial = library.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(built, partial)
            os.replace(partial, library)  # a racing process writes the same bytes
    return ctypes.CDLL(str(library))
