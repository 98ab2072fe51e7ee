"""GPU device requests for artefact containers, from the terms of the host licence.

The SM writes ``terms["gpus"]`` (the host's GPU count) into a host licence only when the artefact's
licence terms require a GPU and the premise policy allowed it on this host. BM then asks Docker for
that many GPUs (``DeviceRequest`` with the ``gpu`` capability, what ``docker run --gpus N`` sends);
without the term a container gets no device, so a licence is the only way to a GPU.
"""

from __future__ import annotations

from typing import Any

from docker.types import DeviceRequest

from bonseyes_py.errors import LicenceError

MAX_GPUS = 1024


def device_requests_for(terms: dict[str, Any]) -> list[DeviceRequest]:
    """The device requests a licence's terms grant; raises ``LicenceError`` on a malformed term."""
    gpus = terms.get("gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_GPUS:
        raise LicenceError(f"licence term gpus must be an integer between 0 and {MAX_GPUS}, not {gpus!r}",
                           check="terms")
    if gpus == 0:
        return []
    return [DeviceRequest(count=gpus, capabilities=[["gpu"]])]
