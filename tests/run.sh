#!/usr/bin/env bash
# The test command (README, CI): sets up everything the suite needs on a fresh machine, then runs it.
#   bash tests/run.sh              # everything, the container-image tests included
#   bash tests/run.sh -m 'not images' tests/evaluate   # any pytest arguments
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[eval,train,dev]'

# The report page's tests drive a real headless browser: Debian's chromium and its driver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo -n"
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# The security scan (tests/k8s/test_checkov.py): checkov pins boto3 below the project's, so it has
# its own virtual environment, outside the project's.
[ -x .venv-checkov/bin/checkov ] || { python3 -m venv .venv-checkov &&
  .venv-checkov/bin/python -m pip install -q --disable-pip-version-check checkov==3.3.30; }

# Container-image tests build and run images daemonless (buildah/podman) on a locally made base.
if [ -f tests/images/prepare.sh ]; then
  bash tests/images/prepare.sh
fi

exec .venv/bin/python -m pytest "$@"
