"""The Jupyter kernel papermill runs a notebook on, with a client that cannot miss a reply.

papermill (through nbclient) waits for each cell's reply with one long poll of the kernel's
socket. The readiness of a zmq socket is edge-triggered; a wakeup missed while an explorer's
widgets send their messages leaves that poll waiting forever on a kernel that has long gone idle
(seen here with notebook 05; jupyter/nbclient#312 reports the same with ipywidgets). This client
polls in slices of POLL_SECONDS, each starting afresh from the socket's state, so a missed wakeup
costs at most that long; an overall timeout still ends the wait as before.

    papermill.execute_notebook(..., kernel_manager_class=PatientKernelManager)
"""

from __future__ import annotations

import time
from queue import Empty

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import DottedObjectName, Type

POLL_SECONDS = 1.0


class PatientChannel(AsyncZMQSocketChannel):
    """A kernel socket whose get_msg polls in slices of POLL_SECONDS (module docstring)."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await super().get_msg(timeout=min(POLL_SECONDS, left))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class PatientKernelClient(AsyncKernelClient):
    shell_channel_class = Type(PatientChannel)
    iopub_channel_class = Type(PatientChannel)
    stdin_channel_class = Type(PatientChannel)
    control_channel_class = Type(PatientChannel)


class PatientKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose clients are PatientKernelClients."""

    client_class = DottedObjectName("trc_lib.interfaces.kernels.PatientKernelClient")
    client_factory = Type(PatientKernelClient, klass=AsyncKernelClient)
