#!/usr/bin/env bash
# Make sure Debian's chromium is at /usr/bin/chromium for the browser tests (tests/browser/).
# Installs it through apt when missing and we are root. `playwright install` is never used:
# it downloads a browser, which does not work on our machines.
# Without chromium (not root, or apt failed) the browser tests skip with the reason,
# except under CI=true, where this script fails.
set -uo pipefail
CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "FAILED: $1 (CI=true: the browser tests need chromium)." >&2
    exit 1
  fi
  echo "NOTE: $1; the browser tests will be skipped. As root: apt-get update && apt-get install -y chromium"
  exit 0
}
if [ "$(id -u)" != "0" ]; then
  fail "no chromium at $CHROMIUM and not root, so it cannot be installed here"
fi
if ! command -v apt-get >/dev/null; then
  fail "no chromium at $CHROMIUM and no apt-get to install it"
fi
echo "installing chromium (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq || ! apt-get install -y -qq chromium >/dev/null; then
  fail "apt-get could not install chromium"
fi
[ -x "$CHROMIUM" ] || fail "chromium was installed but $CHROMIUM is not there"
echo "chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
