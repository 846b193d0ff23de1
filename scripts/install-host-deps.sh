#!/usr/bin/env bash
# Debian packages bench needs on a benchmark host and in CI (idempotent).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(
  docker.io podman runc crun conmon uidmap fuse-overlayfs   # container engines
  slirp4netns                                               # podman-rootless: its published path
  lxc lxc-templates                                         # LXC (command-line tools)
  lxd                                                       # LXD: daemon and its client `lxc` (docs/runtimes.md)
  containerd systemd-container                              # ctr, systemd-nspawn (docs/runtimes.md)
  runsc                                                     # gVisor, an OCI runtime (docs/runtimes.md)
  stress-ng busybox-static                                  # the workload image
  nginx-light redis-server postgresql-15 sockperf iperf3    # service workloads' servers
  mosquitto python3-paho-mqtt                               # app-queue: broker, services and client
  gunicorn python3-psycopg2 python3-redis                   # app-multitier: the app tier
  qemu-system-x86 cpio                                      # the cgroup v2 test VM
  chromium                                                  # e2e: renders the HTML report
  wrk nghttp2-client                                        # HTTP load: wrk closed loop, h2load at a rate
  openssh-client openssh-server                             # bench fleet: ssh (Ansible), sshd (its test hosts)
  python3-venv git procps iproute2 ca-certificates curl
  iputils-ping                                              # tests: ping, the reference for tc netem's delay
)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The unprivileged user rootless podman runs as (podman-rootless, docs/runtimes.md).
bash "$(dirname "$0")/setup-rootless.sh"
