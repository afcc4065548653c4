#!/usr/bin/env bash
# Installs Debian's Chromium for the viewer's browser tests (python_tests/test_viewer.py), which
# drive /usr/bin/chromium through Playwright for Python. Playwright's own browser download
# (`playwright install`) cannot work on these machines and is never used.
# Idempotent: returns at once when chromium is already installed.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser.sh: chromium is missing and installing it needs root (apt-get install chromium)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
