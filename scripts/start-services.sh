#!/usr/bin/env bash
# Start dockerd and the podman API service if they are not running (idempotent).
set -euo pipefail
# gVisor's runsc as a docker runtime with the flags bench gives it (bench/runtimes/_oci.py),
# merged into daemon.json (other keys kept); a running dockerd reloads runtimes on SIGHUP.
if command -v runsc >/dev/null && [ "$(.venv/bin/python -m bench.runtimes._oci)" = changed ] \
  && docker version >/dev/null 2>&1; then
  kill -HUP "$(cat /var/run/docker.pid)"
  sleep 1
fi
if ! docker version >/dev/null 2>&1; then
  # A dockerd killed with SIGKILL leaves its pid file, and a new one refuses to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  setsid dockerd >/var/log/bench-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
  docker version >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /var/log/bench-dockerd.log; exit 1; }
fi
if [ ! -S /run/podman/podman.sock ] || ! curl -sf --unix-socket /run/podman/podman.sock http://d/_ping >/dev/null 2>&1; then
  mkdir -p /run/podman
  # conmon drops a file named "oom" into the service's working directory on OOM kills.
  rm -f /run/podman/podman.sock
  (cd /run/podman && setsid podman system service --time=0 unix:///run/podman/podman.sock >/var/log/bench-podman.log 2>&1 < /dev/null &)
  for _ in $(seq 30); do [ -S /run/podman/podman.sock ] && break; sleep 1; done
  [ -S /run/podman/podman.sock ] || { echo "podman service did not start:"; tail -20 /var/log/bench-podman.log; exit 1; }
fi
# LXD's daemon, as its systemd unit would start it (docs/runtimes.md, "LXD"). No `lxd init`:
# bench creates the one storage pool it uses, and LXD gets no network (init would add a
# bridge with a DHCP server) and no profile bench relies on.
if command -v lxd >/dev/null && ! lxd waitready --timeout=1 >/dev/null 2>&1; then
  mkdir -p /var/log/lxd
  group=(); getent group lxd >/dev/null && group=(--group lxd)
  (ulimit -n 1048576 2>/dev/null || true
   setsid lxd "${group[@]}" --logfile /var/log/lxd/lxd.log >/var/log/bench-lxd.log 2>&1 < /dev/null &)
  lxd waitready --timeout=60 || { echo "lxd did not start:"; tail -20 /var/log/lxd/lxd.log /var/log/bench-lxd.log; exit 1; }
fi
lxd_version=$(command -v lxc >/dev/null && lxc query /1.0 2>/dev/null | sed -n 's/.*"server_version": "\(.*\)".*/\1/p' || true)
echo "dockerd: $(docker version --format '{{.Server.Version}}')  podman: $(podman --version)  lxd: ${lxd_version:-none}"
