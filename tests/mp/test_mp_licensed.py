"""The payload of a registered image runs with its original command, environment, working directory and
user through the full licensed path (steps 1 to 6): MP registration, SM records, a BM fetching by digest,
host licence, container start, BL's artefact licence, then BL dropping to the original user.

Reuses the end-to-end suite's ``Lab`` (tests/e2e/lab.py) with one host, so it costs one SM, one BM and
one pipeline; it is marked ``integration`` like the e2e suite.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from helpers_mp import PY_PAYLOAD, build
from lab import Lab, logs_of, run_pipeline, wait_for

from bonseyes_py.pki.roles import Identity, Role

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]
PREMISE = "mp-lab"
HOST_IP = "127.0.0.5"


@pytest.fixture(scope="module")
def licensed_lab(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient,
                 bl_dir: Path) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("licensed-lab")
    os.chmod(root, 0o700)
    lab = Lab(root, docker_client, bl_dir)
    try:
        lab.start_sm()
        lab.enrol_user("alice")
        lab.put_premise(PREMISE, ["alice"])
        lab.start_registry()
        lab.host_a = lab.add_host(HOST_IP, "alice", [PREMISE])
        lab.start_bm(lab.host_a)
        yield lab
    finally:
        lab.close()


def test_payload_runs_with_original_cmd_env_workdir_and_user(licensed_lab: Lab,
                                                             docker_client: docker.DockerClient) -> None:
    # The Python payload of the other MP tests, kept alive so the pipeline stays "running" while we read it.
    image = build(docker_client, f"""FROM bonseyes/base-python:bookworm
ENV GREETING="hello from python"
WORKDIR /srv/app
USER nobody
ENTRYPOINT ["python3", "-u", "-c", "{PY_PAYLOAD}; import time; time.sleep(3600)"]
CMD ["first", "second"]
""", "bonseyes-test/python-service:1")
    # The operator registers Alice's image from the MP host's engine (what the Ansible module does), then the SM
    # records it.
    owner = Identity(licensed_lab.ca.trust_domain, Role.USER, "alice")
    artefact = licensed_lab.marketplace.register_local_image(image, owner=owner, name="original-settings")
    recorded = licensed_lab.admin.post("/v1/artefacts", {"artefact_id": "original-settings", "owner": "alice",
                                                         "digest": artefact.digest})
    assert recorded.status_code == 201, recorded.text
    alice = licensed_lab.user("alice")
    pipeline, started = run_pipeline(alice, PREMISE, [{"artefact_id": "original-settings",
                                                       "host_id": licensed_lab.host_a.host_id}])
    try:
        assert [s["status"] for s in started["stages"]] == ["running"], started
        [container] = licensed_lab.pipeline_containers(pipeline["pipeline_id"])
        line = wait_for(lambda: next((x for x in logs_of(container).splitlines() if x.startswith("cwd=")), None),
                        60, "the payload's report")
        assert "cwd=/srv/app" in line
        assert "uid=65534" in line
        assert "gid=65534" in line
        assert "greeting=hello from python" in line
        assert line.endswith("args=first,second")
        assert "ldpath=-" in line  # BL's own loader settings never leak into the payload
        # The container itself starts BL as root; only the payload runs as the image's user.
        assert container.attrs["Config"]["User"] in ("", "root", "0")
    finally:
        stopped = alice.post(f"/v1/pipelines/{pipeline['pipeline_id']}/stop")
        assert stopped.status_code == 200, stopped.text
