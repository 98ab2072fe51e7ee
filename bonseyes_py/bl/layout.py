"""Where things live inside a published artefact image; shared by the MP (writer) and BL (reader)."""

from __future__ import annotations

BL_HOME = "/opt/bonseyes"
BL_EXECUTABLE = f"{BL_HOME}/bl/bonseyes-layer"
METADATA = f"{BL_HOME}/artefact.json"
ARTEFACT_ID = f"{BL_HOME}/artefact-id.jwt"
SM_ROOT = f"{BL_HOME}/certs/sm-root.pem"
SM_INTERMEDIATE = f"{BL_HOME}/certs/sm-intermediate.pem"

# BM bind-mounts the host licence here when it starts the container (read-only).
LICENCE_DIR = "/run/bonseyes"
HOST_LICENCE = f"{LICENCE_DIR}/host-licence.jwt"
# BM bind-mounts its relay's sockets here (read-write): the container's only way in and out (bm/netrelay.py).
NET_DIR = "/run/bonseyes-net"

LABEL_PREFIX = "io.bonseyes"
LABEL_ARTEFACT = f"{LABEL_PREFIX}.artefact.name"
LABEL_OWNER = f"{LABEL_PREFIX}.artefact.owner"
LABEL_ARTEFACT_ID = f"{LABEL_PREFIX}.artefact.id"
LABEL_ORIGINAL = f"{LABEL_PREFIX}.original"  # JSON of entrypoint, cmd, env, workdir, user
LABEL_BL_VERSION = f"{LABEL_PREFIX}.bl.version"
