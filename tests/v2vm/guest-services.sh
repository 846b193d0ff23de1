#!/bin/bash
# Inside the cgroup v2 VM (tests/v2vm/run-in-v2-vm.sh): start dockerd and point podman at
# writable storage, then run COMMAND with that environment and return its exit status.
#
# Usage, as the VM's command, from the repo root:
#   bash tests/v2vm/guest-services.sh .venv/bin/python -m pytest tests/integration/test_podman.py
#
# The guest's / is the host's, read-only over 9p, with tmpfs on /tmp and /run; so:
# - dockerd keeps its data in /tmp/docker and needs no bridge or iptables (containers run
#   with --network none anyway);
# - podman gets a containers.conf and storage.conf under /tmp, exported through
#   CONTAINERS_CONF / CONTAINERS_STORAGE_CONF (containers.conf(5), FILES). Every podman
#   process inherits them: the `podman system service` bench starts for itself, and the
#   tests' own `podman inspect`. bench's code needs no VM special case. The defaults this
#   overrides all live on the read-only root: /var/lib/containers (storage, volumes),
#   /etc/cni/net.d or /etc/containers/networks (network config, written even for
#   --network none), and journald (events; no journald in the guest). cgroupfs because
#   no systemd runs there. See docs/host-notes.md.
# - bench's private containerd gets its root under /tmp (BENCH_CONTAINERD_ROOT);
# - lxc needs nothing: bench's LxcRuntime takes a private lxcpath;
# - rootless podman (podman-rootless) keeps its storage in its user's home, read-only here:
#   a tmpfs owned by the user goes over it (native overlay works on it in the user
#   namespace); its runroot is bench's /run/bench-rootless, on the guest's tmpfs /run.
#   bench delegates each trial's cgroup to the user itself, as on any v2 host.
# Refuses to run outside the VM (BENCH_V2VM unset): it would start a second dockerd.
set -euo pipefail
if [ "${BENCH_V2VM:-}" != 1 ]; then
  echo "guest-services.sh: only for the cgroup v2 VM (BENCH_V2VM=1); see tests/v2vm/" >&2
  exit 2
fi
(($#)) || { echo "usage: $0 COMMAND [ARG]..." >&2; exit 2; }
T0=$(date +%s)
say() { echo "[guest-services +$(($(date +%s) - T0))s] $*"; }

CONF=/tmp/bench-containers
mkdir -p "$CONF" /tmp/pstore /tmp/prun /tmp/pnet /tmp/docker
cat >"$CONF/storage.conf" <<'EOF'
[storage]
driver = "overlay"
graphroot = "/tmp/pstore"
runroot = "/tmp/prun"
EOF
cat >"$CONF/containers.conf" <<'EOF'
[network]
network_config_dir = "/tmp/pnet"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "/tmp/prun/events.log"
volume_path = "/tmp/pstore/volumes"
EOF
export CONTAINERS_CONF=$CONF/containers.conf CONTAINERS_STORAGE_CONF=$CONF/storage.conf
# bench's private containerd keeps images and snapshots under /var/lib by default.
export BENCH_CONTAINERD_ROOT=/tmp/bench-containerd
# The user of scripts/setup-rootless.sh, when the host has it (CI's has).
if ROOTLESS=$(getent passwd bench-rootless); then
  IFS=: read -r _ _ ROOTLESS_UID ROOTLESS_GID _ ROOTLESS_HOME _ <<<"$ROOTLESS"
  mount -t tmpfs -o "mode=0700,uid=$ROOTLESS_UID,gid=$ROOTLESS_GID" rootless-home "$ROOTLESS_HOME"
fi

setsid dockerd --iptables=false --bridge=none --data-root /tmp/docker \
  >/tmp/dockerd.log 2>&1 </dev/null &
DOCKERD_PID=$!
# While dockerd starts (about 20 s under emulation): podman's first use initialises its
# storage (about 40 s); done here so that a broken config fails before any test runs.
if ! podman info --format '{{.Store.GraphDriverName}} {{.Host.CgroupManager}} {{.Host.CgroupsVersion}} {{.Host.OCIRuntime.Name}}' >/tmp/podman-info.txt 2>&1; then
  echo "podman info failed with the guest config:" >&2
  cat /tmp/podman-info.txt >&2
  exit 1
fi
say "podman $(podman --version | awk '{print $3}'): storage, cgroup manager, cgroups, OCI runtime: $(cat /tmp/podman-info.txt)"
for _ in $(seq 120); do
  docker version >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || break
  sleep 0.5
done
if ! docker version >/dev/null 2>&1; then
  echo "dockerd did not answer within 60 s of podman's set-up; its log:" >&2
  tail -30 /tmp/dockerd.log >&2
  exit 1
fi
say "dockerd $(docker version --format '{{.Server.Version}}') up;" \
  "storage $(docker info --format '{{.Driver}}'), cgroup $(docker info --format '{{.CgroupDriver}} v{{.CgroupVersion}}')"

set +e
"$@"
RC=$?
set -e
say "command exited with $RC; stopping dockerd"
kill "$DOCKERD_PID" 2>/dev/null && wait "$DOCKERD_PID" 2>/dev/null || true
exit "$RC"
