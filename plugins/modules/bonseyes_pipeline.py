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
    licence before the payload runs (steps 4 to 6). The task fails, naming the stage and its detail, when a
    stage does not reach C(running).
  - The SM knows pipelines only by the ID it makes for each request. With O(name), the module keeps the ID of
    the named pipeline in O(record_dir) on the managed host, so the task is idempotent. O(state=started) leaves
    alone a named pipeline whose every stage the SM reports C(running) with the same O(premise) and O(stages);
    it starts a new one when the recorded one stopped or failed, and stops the recorded one first when its
    definition differs or only some of its stages are up. O(state=stopped) stops the named pipeline and reports a
    change only when it had not ended and a stage was still pending, starting or running.
  - Both states read the SM's runtime status the same way, as the diff shows it in C(before.status), C(running) (every
    stage runs), C(partial) (some stage is still up) or C(stopped).
  - Without O(name), every O(state=started) run requests and starts a new pipeline and reports a change;
    O(state=stopped) then needs O(pipeline_id).
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
    details: Starts and stops nothing and writes no record; it reads the recorded pipeline's runtime status at the
      SM to predict the change.
  diff_mode:
    support: full
    details: Before and after are the pipeline ID and its status (C(absent), C(running), C(partial), C(stopped)).
  idempotent:
    support: partial
    details: With O(name) both states are idempotent; without it O(state=started) starts a new pipeline on
      every run, and O(state=stopped) is idempotent.
options:
  state:
    description: Whether the pipeline should run or be stopped.
    type: str
    choices: [started, stopped]
    default: started
  name:
    description:
      - Name of the pipeline on this managed host; the key of its record in O(record_dir).
      - Letters, digits, C(.), C(_) and C(-) only.
    type: str
  record_dir:
    description: Directory (made C(0700)) of the name to pipeline ID records, one C(<name>.json) (C(0600)) each.
      Required with O(name).
    type: path
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
    description: The pipeline to stop, when it has no O(name). O(state=stopped) needs O(pipeline_id) or O(name).
    type: str
"""

EXAMPLES = r"""
- name: Ensure the two-stage demo pipeline runs (a re-run leaves it alone)
  bonseyes.vp.bonseyes_pipeline:
    name: demo
    record_dir: /var/lib/bonseyes/users/demo-user/pipelines
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
    name: demo
    record_dir: /var/lib/bonseyes/users/demo-user/pipelines
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/users/demo-user/user.pem
    client_key: /var/lib/bonseyes/users/demo-user/user.key
    ca_cert: /var/lib/bonseyes/sm/tls/ca-bundle.pem

- name: Start a one-off pipeline (a new one on every run)
  bonseyes.vp.bonseyes_pipeline:
    premise: local
    stages:
      - {artefact_id: demo-sender, host_id: "{{ host_id }}"}
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/users/demo-user/user.pem
    client_key: /var/lib/bonseyes/users/demo-user/user.key
    ca_cert: /var/lib/bonseyes/sm/tls/ca-bundle.pem
"""

RETURN = r"""
pipeline_id:
  description: ID of the pipeline; null in check mode when a new one would start, and when O(state=stopped) found
    no record of O(name).
  returned: success
  type: str
  sample: pl-1b2c3d4e5f
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
replaced:
  description: ID of the pipeline of O(name) that was stopped (or would be) because its definition differs or only
    part of it was up.
  returned: when a named pipeline was replaced
  type: str
  sample: pl-0a1b2c3d4e
"""

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
)

if HAS_BONSEYES_PY:
    from bonseyes_py import safejson
    from bonseyes_py.errors import InputError

STAGE_KEYS = ("position", "artefact_id", "host_id", "status", "reported_digest", "digest", "nonce", "detail",
              "container_id", "runtime_name", "port")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENDED = ("stopped", "aborted", "failed")
# Stage statuses the SM's stop moves to "stopped" (bonseyes_py/sm/pipeline_runtime.py).
ACTIVE_STAGE = ("pending", "starting", "running")


class PipelineModule(BonseyesAnsibleModule):
    argument_spec = dict(
        state=dict(type="str", choices=["started", "stopped"], default="started"),
        name=dict(type="str"),
        record_dir=dict(type="path"),
        premise=dict(type="str"),
        stages=dict(type="list", elements="dict",
                    options=dict(artefact_id=dict(type="str", required=True), host_id=dict(type="str", required=True))),
        pipeline_id=dict(type="str"),
    )
    module_kwargs = dict(supports_check_mode=True,
                         required_together=[("name", "record_dir")],
                         mutually_exclusive=[("name", "pipeline_id")],
                         required_if=[("state", "started", ("premise", "stages")),
                                      ("state", "stopped", ("pipeline_id", "name"), True)])
    sm_connection = True

    def run(self):
        name = self.params["name"]
        if name is not None and not NAME_PATTERN.match(name):
            self.fail(msg=f"name {name!r} may hold only letters, digits, '.', '_' and '-' (up to 128)", check="input")
        record = self._read_record() if name else None
        if self.params["state"] == "stopped":
            pipeline_id = self.params["pipeline_id"] or (record or {}).get("pipeline_id")
            return self._stop(pipeline_id)
        return self._start(record)

    # -- started --------------------------------------------------------------------------------------

    def _start(self, record):
        wanted = dict(premise=self.params["premise"],
                      stages=[dict(artefact_id=s["artefact_id"], host_id=s["host_id"]) for s in self.params["stages"]])
        before = dict(pipeline_id=None, status="absent")
        replaced = None
        if record is not None:
            current = self.sm_call("GET", f"/v1/pipelines/{record['pipeline_id']}/runtime", missing_ok=True)
            if current is not None:
                state = runtime_state(current)
                before = dict(pipeline_id=record["pipeline_id"], status=state)
                same = record.get("premise") == wanted["premise"] and record.get("stages") == wanted["stages"]
                if state == "running" and same:
                    return self._result(False, record["pipeline_id"], "running", current.get("stages", []), before)
                if state != "stopped":
                    # Another definition, or only part of it still up: stopped before the new one starts, so no
                    # stage of the recorded pipeline is left behind holding licences.
                    replaced = record["pipeline_id"]
        if self.check_mode:
            return self._result(True, None, "would start", [], before, replaced=replaced)
        if replaced is not None:
            self.sm_call("POST", f"/v1/pipelines/{replaced}/stop")
        requested = self.sm_call("POST", "/v1/pipelines", wanted, expect=(201,))
        pipeline_id = requested["pipeline_id"]
        if self.params["name"]:
            # Recorded before the start, so a pipeline whose start fails can still be stopped by name.
            self._write_record(dict(wanted, name=self.params["name"], pipeline_id=pipeline_id,
                                    sm_url=self.params["sm_url"]))
        started = self.sm_call("POST", f"/v1/pipelines/{pipeline_id}/start")
        stages = [_stage(s) for s in started.get("stages", [])]
        # The start answer may carry only positions and statuses: name each stage by what was asked for it.
        for stage in stages:
            position = stage.get("position")
            if isinstance(position, int) and 0 <= position < len(wanted["stages"]):
                for key in ("artefact_id", "host_id"):
                    stage.setdefault(key, wanted["stages"][position][key])
        failed = [s for s in stages if s.get("status") != "running"]
        if failed:
            detail = "; ".join(f"stage {s.get('position')} ({s.get('artefact_id')} on {s.get('host_id')}): "
                               f"{s.get('status')} {s.get('detail') or ''}".strip() for s in failed)
            self.fail(msg=f"pipeline {pipeline_id} did not start: {detail}", check="pipeline-start",
                      pipeline_id=pipeline_id, stages=stages)
        return self._result(True, pipeline_id, "running", stages, before, replaced=replaced)

    # -- stopped --------------------------------------------------------------------------------------

    def _stop(self, pipeline_id):
        if pipeline_id is None:
            # A name never started here: nothing runs under it.
            return self._result(False, None, "stopped", [], dict(pipeline_id=None, status="absent"))
        status = self.sm_call("GET", f"/v1/pipelines/{pipeline_id}/runtime")
        state = runtime_state(status)
        before = dict(pipeline_id=pipeline_id, status=state)
        changed = state != "stopped"
        if changed and not self.check_mode:
            status = self.sm_call("POST", f"/v1/pipelines/{pipeline_id}/stop")
        return self._result(changed, pipeline_id, "stopped", status.get("stages", []), before)

    # -- helpers --------------------------------------------------------------------------------------

    def _result(self, changed, pipeline_id, status, stages, before, replaced=None):
        result = dict(changed=changed, pipeline_id=pipeline_id, status=status, stages=[_stage(s) for s in stages])
        if replaced is not None:
            result["replaced"] = replaced
        if self.diff_mode:
            result["diff"] = dict(before=before, after=dict(pipeline_id=pipeline_id, status=status))
        return result

    def _record_path(self):
        return os.path.join(self.params["record_dir"], self.params["name"] + ".json")

    def _read_record(self):
        path = self._record_path()
        if not os.path.exists(path):
            return None
        try:
            record = safejson.load_file(path, what=f"pipeline record {path}")
        except InputError as err:
            self.fail(msg=err.args[0], check="pipeline-record")
        if not isinstance(record, dict) or not isinstance(record.get("pipeline_id"), str):
            self.fail(msg=f"pipeline record {path} holds no pipeline_id", check="pipeline-record")
        return record

    def _write_record(self, record):
        os.makedirs(self.params["record_dir"], 0o700, exist_ok=True)
        self.write_file_atomic(self._record_path(), json.dumps(record, indent=2, sort_keys=True).encode(), 0o600)


def runtime_state(runtime):
    """The one reading of the SM's runtime status that both states use.

    ``running``: the pipeline has not ended and every stage runs (what O(state=started) keeps).
    ``stopped``: the pipeline ended, or none of its stages is pending, starting or running (nothing to stop).
    ``partial``: anything else; some stage is still up, so O(state=stopped) stops it and O(state=started)
    stops it before starting anew.
    """
    stages = runtime.get("stages") or []
    if runtime.get("status") not in ENDED and stages and all(s.get("status") == "running" for s in stages):
        return "running"
    if runtime.get("status") in ENDED or not any(s.get("status") in ACTIVE_STAGE for s in stages):
        return "stopped"
    return "partial"


def _stage(stage):
    return {key: stage[key] for key in STAGE_KEYS if key in stage}


def main():
    PipelineModule()()


if __name__ == "__main__":
    main()
