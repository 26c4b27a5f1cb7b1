#!/usr/bin/env bash
# Debian's Chromium for the report's browser test (Playwright drives the system browser;
# no browser download). Safe to run again.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
/usr/bin/chromium --version
