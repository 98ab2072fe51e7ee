#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: request and start (or stop) a Bonseyes pipeline through the SM and the hosts' BMs."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_pipeline
short_description: Start or stop a Bonseyes pipeline through the Security Manager
version_added: 0.1.0
description:
  - With O(state=started), requests a pipeline of O(stages) in O(premise) as the user of O(client_cert)
    (C(POST /v1/pipelines)) the SM checks the premise's policy and every stage's BM fetches the image and
    verifies its digest (step 3) then starts it (C(POST /v1/pipelines/<id>/start)) each BM gets a host licence,
    starts the container with its private licence mount, and the Bonseyes Layer in it obtains the artefact
    licence before the payload runs (steps 4 to 6).
  - Starting a pipeline always makes a new one, so O(state=started) always reports a change; the task fails,
    naming the stage and its detail, when a stage does not reach C(running).
  - With O(state=stopped), stops O(pipeline_id) and reports a change only when a stage was still running.
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - bonseyes.vp.sm_connection
  - bonseyes.vp.attributes
attributes:
  check_mode:
    support: full
    details: Starts and stops nothing; O(state=stopped) reads the runtime status to predict the change.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: O(state=stopped) is idempotent; O(state=started) starts a new pipeline on every run.
options:
  state:
    description: Whether to start a new pipeline or stop O(pipeline_id).
    type: str
    choices: [started, stopped]
    default: started
  premise:
    description: Premise the pipeline runs in. Required with O(state=started).
    type: str
  stages:
    description: The stages, in order; stage N sends to stage N+1. Required with O(state=started).
    type: list
    elements: dict
    suboptions:
      artefact_id:
        description: Artefact the stage runs.
        type: str
        required: true
      host_id:
        description: Host the stage runs on.
        type: str
        required: true
  pipeline_id:
    description: The pipeline to stop. Required with O(state=stopped).
    type: str
"""

EXAMPLES = r"""
- name: Run the two-stage demo pipeline
  bonseyes.vp.bonseyes_pipeline:
    premise: local
    stages:
      - {artefact_id: demo-sender, host_id: "{{ host_id }}"}
      - {artefact_id: demo-receiver, host_id: "{{ host_id }}"}
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/users/demo-user/user.pem
    client_key: /var/lib/bonseyes/users/demo-user/user.key
    ca_cert: /var/lib/bonseyes/sm/tls/ca-bundle.pem
  register: pipeline

- name: Stop it
  bonseyes.vp.bonseyes_pipeline:
    state: stopped
    pipeline_id: "{{ pipeline.pipeline_id }}"
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/users/demo-user/user.pem
    client_key: /var/lib/bonseyes/users/demo-user/user.key
    ca_cert: /var/lib/bonseyes/sm/tls/ca-bundle.pem
"""

RETURN = r"""
pipeline_id:
  description: ID of the pipeline; null in check mode with O(state=started).
  returned: success
  type: str
  sample: p-1b2c3d4e5f
status:
  description: Status of the pipeline after the call (C(running), C(stopped), or C(would start) in check mode).
  returned: success
  type: str
  sample: running
stages:
  description: Per stage, position, artefact, host, status, digest and nonce (as the SM reports them).
  returned: success
  type: list
  elements: dict
  sample: [{"position": 0, "artefact_id": "demo-sender", "status": "running"}]
"""

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import BonseyesModule  # noqa: E402

STAGE_KEYS = ("position", "artefact_id", "host_id", "status", "reported_digest", "digest", "nonce", "detail",
              "container_id", "runtime_name", "port")


class PipelineModule(BonseyesModule):
    argument_spec = dict(
        state=dict(type="str", choices=["started", "stopped"], default="started"),
        premise=dict(type="str"),
        stages=dict(type="list", elements="dict",
                    options=dict(artefact_id=dict(type="str", required=True), host_id=dict(type="str", required=True))),
        pipeline_id=dict(type="str"),
    )
    module_kwargs = dict(supports_check_mode=True,
                         required_if=[("state", "started", ("premise", "stages")),
                                      ("state", "stopped", ("pipeline_id",))])
    sm_connection = True

    def run(self):
        if self.params["state"] == "stopped":
            return self._stop()
        if self.check_mode:
            return dict(changed=True, pipeline_id=None, status="would start", stages=[])
        requested = self.sm_call("POST", "/v1/pipelines", dict(premise=self.params["premise"],
                                                               stages=self.params["stages"]), expect=(201,))
        pipeline_id = requested["pipeline_id"]
        started = self.sm_call("POST", f"/v1/pipelines/{pipeline_id}/start")
        stages = [_stage(s) for s in started.get("stages", [])]
        # The start answer may carry only positions and statuses: name each stage by what was asked for it.
        for stage in stages:
            position = stage.get("position")
            if isinstance(position, int) and 0 <= position < len(self.params["stages"]):
                for key in ("artefact_id", "host_id"):
                    stage.setdefault(key, self.params["stages"][position][key])
        failed = [s for s in stages if s.get("status") != "running"]
        if failed:
            detail = "; ".join(f"stage {s.get('position')} ({s.get('artefact_id')} on {s.get('host_id')}): "
                               f"{s.get('status')} {s.get('detail') or ''}".strip() for s in failed)
            self.fail(msg=f"pipeline {pipeline_id} did not start: {detail}", check="pipeline-start",
                      pipeline_id=pipeline_id, stages=stages)
        return dict(changed=True, pipeline_id=pipeline_id, status="running", stages=stages)

    def _stop(self):
        pipeline_id = self.params["pipeline_id"]
        status = self.sm_call("GET", f"/v1/pipelines/{pipeline_id}/runtime")
        running = any(s.get("status") not in ("stopped", "failed", "removed") for s in status.get("stages", []))
        if running and not self.check_mode:
            status = self.sm_call("POST", f"/v1/pipelines/{pipeline_id}/stop")
        return dict(changed=running, pipeline_id=pipeline_id, status="stopped",
                    stages=[_stage(s) for s in status.get("stages", [])])


def _stage(stage):
    return {key: stage[key] for key in STAGE_KEYS if key in stage}


def main():
    PipelineModule()()


if __name__ == "__main__":
    main()
