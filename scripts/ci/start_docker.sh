#!/usr/bin/env bash
# Start a Docker engine when none answers. This sandbox has no systemd, so dockerd runs in the
# background with the flags that work here (no iptables, no default bridge: containers use
# --network host or none). overlay2 first (0.3 s per `docker run` of a 270 MB image); vfs, which
# copies the whole image for every container, only when overlay2 cannot start.
# Idempotent: prints "already running" and exits 0 when `docker info` answers.
set -euo pipefail

LOG=${BONSEYES_DOCKERD_LOG:-/var/log/bonseyes-dockerd.log}
SOCKET=${BONSEYES_DOCKER_SOCKET:-/var/run/docker.sock}
TIMEOUT=${BONSEYES_DOCKERD_TIMEOUT:-60}

if docker info >/dev/null 2>&1; then
    echo "start_docker: engine already running ($(docker info --format '{{.Driver}}' 2>/dev/null || echo '?'))"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "start_docker: dockerd not installed; run scripts/ci/install_docker.sh first" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "start_docker: the engine must be started as root" >&2
    exit 1
fi

# try DRIVER: start dockerd with DRIVER and wait until it answers; 0 when up, 1 when it died.
try() {
    local driver=$1 pid waited=0
    rm -f "$SOCKET" /var/run/docker.pid
    echo "start_docker: starting dockerd --storage-driver=$driver (log: $LOG)"
    echo "=== $(date -Is) dockerd --storage-driver=$driver" >>"$LOG"
    setsid dockerd --storage-driver="$driver" --iptables=false --bridge=none >>"$LOG" 2>&1 </dev/null &
    pid=$!
    while [ "$waited" -lt "$TIMEOUT" ]; do
        if [ -S "$SOCKET" ] && docker info >/dev/null 2>&1; then
            echo "start_docker: engine up (pid $pid, storage driver $driver) after ${waited}s"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "start_docker: dockerd with $driver exited; last log lines:" >&2
            tail -n 5 "$LOG" >&2 || true
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "start_docker: timed out after ${TIMEOUT}s waiting for $SOCKET (see $LOG)" >&2
    kill "$pid" 2>/dev/null || true
    sleep 2
    return 1
}

if try overlay2; then
    exit 0
fi
echo "start_docker: overlay2 failed; falling back to vfs (every container copies its whole image)"
if try vfs; then
    exit 0
fi
echo "start_docker: could not start the Docker engine with overlay2 or vfs (see $LOG)" >&2
exit 1
