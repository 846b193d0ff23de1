#!/usr/bin/env bash
# Everything a fresh Debian host needs to run bench: packages, .venv, dockerd, podman service.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-host-deps.sh
bash scripts/setup-venv.sh
bash scripts/start-services.sh
