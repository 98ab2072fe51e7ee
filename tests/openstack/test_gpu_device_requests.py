"""BM asks Docker for GPUs only when the host licence grants them (terms["gpus"] written by the SM)."""

from __future__ import annotations

from typing import Any

import pytest

from bonseyes_py.bm.devices import device_requests_for
from bonseyes_py.errors import LicenceError


def test_no_gpu_term_requests_no_device() -> None:
    assert device_requests_for({}) == []
    assert device_requests_for({"premise": "hpc", "gpus": 0}) == []


def test_gpu_term_becomes_a_docker_gpu_device_request() -> None:
    [request] = device_requests_for({"premise": "hpc", "gpus": 2})
    # The exact body docker-py sends in HostConfig.DeviceRequests for `docker run --gpus 2`.
    assert dict(request) == {"Driver": "", "Count": 2, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}


@pytest.mark.parametrize("gpus", [-1, 1025, "2", 1.5, True, None])
def test_malformed_gpu_term_is_refused(gpus: Any) -> None:
    with pytest.raises(LicenceError) as caught:
        device_requests_for({"gpus": gpus})
    assert caught.value.check == "terms"
