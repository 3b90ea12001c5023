"""Root conftest (applies to tests/ and to the notebooks nbval runs).

Notebooks and tests write data/ and outputs/ under $TRC_WORKSPACE; point it at a fresh
temporary folder so a test run never touches the user's own data and models. Kernels started
by nbval inherit this environment.
"""

import os
import tempfile

os.environ.setdefault("TRC_WORKSPACE", tempfile.mkdtemp(prefix="trc-test-workspace-"))
