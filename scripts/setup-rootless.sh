#!/usr/bin/env bash
# The unprivileged user rootless podman runs as (runtime `podman-rootless`, docs/runtimes.md):
# a system user with its own home and subordinate uid/gid ranges. Idempotent; run as root.
set -euo pipefail
USER_NAME=bench-rootless
HOME_DIR=/var/lib/bench-rootless
# 65536 ids from 2^31 upwards: far above the usual ranges useradd hands out (100000+).
SUB_START=2147483648
SUB_COUNT=65536
if ! id -u "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$HOME_DIR" --create-home \
    --shell /usr/sbin/nologin --comment "bench rootless podman" "$USER_NAME"
fi
install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$HOME_DIR"
touch /etc/subuid /etc/subgid
grep -q "^$USER_NAME:" /etc/subuid || usermod --add-subuids "$SUB_START-$((SUB_START + SUB_COUNT - 1))" "$USER_NAME"
grep -q "^$USER_NAME:" /etc/subgid || usermod --add-subgids "$SUB_START-$((SUB_START + SUB_COUNT - 1))" "$USER_NAME"
# Without udev (containers, minimal VMs) the node is 0600; udev makes it 0666 on a stock
# Debian host. slirp4netns opens it as the user for the published network path.
if [ -c /dev/net/tun ]; then chmod 0666 /dev/net/tun; fi
