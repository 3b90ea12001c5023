"""Root conftest (applies to tests/ and to the notebooks nbval runs).

Notebooks and tests write data/ and outputs/ under $TRC_WORKSPACE; point it at a fresh
temporary folder so a test run never touches the user's own data and models. Kernels started
by nbval inherit this environment.

`make test` runs the suite on one pytest-xdist worker per core (`-n 2`):
- each worker gets a workspace of its own, since notebooks and tests write the same file names;
- the notebooks run on one worker, one after another, in their numbered order, since 03 and 04
  reuse the data and model that 01 and 02 leave in the workspace;
- every process of a worker (its kernels, its subprocesses) uses one thread: PyTorch's OpenMP
  threads spin on each other when the other worker holds the second core, which made one
  notebook's training several times slower.
"""

import os
import tempfile

import pytest

os.environ.setdefault("TRC_WORKSPACE", tempfile.mkdtemp(prefix="trc-test-workspace-"))
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ["TRC_WORKSPACE"] = os.path.join(os.environ["TRC_WORKSPACE"], WORKER)
    os.makedirs(os.environ["TRC_WORKSPACE"], exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = "1"


def pytest_collection_modifyitems(items):
    """The notebooks first (a stable sort: they keep their numbered order). They are the longest unit
    of work and should start at once; xdist's loadscope also hands out its largest units first."""
    items.sort(key=lambda item: item.path.suffix != ".ipynb")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, called only where it runs the suite
def pytest_xdist_make_scheduler(config, log):
    """Whole test files as units of work (xdist's loadscope), and all the notebooks as one unit."""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return "notebooks" if ".ipynb::" in nodeid else super()._split_scope(nodeid)

    return NotebooksTogether(config, log)
