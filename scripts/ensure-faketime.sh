#!/usr/bin/env bash
# Make sure libfaketime (Debian's faketime package) is there for the clock skew tests
# (tests/scheduling/test_clock_skew.py run a cluster node with its clock ten minutes off).
# Installs it through apt when missing and we are root. Without it those tests skip with the
# reason, except under CI=true, where this script fails.
set -uo pipefail
if compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null; then
  exit 0
fi
fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "FAILED: $1 (CI=true: the clock skew tests need libfaketime)." >&2
    exit 1
  fi
  echo "NOTE: $1; the clock skew tests will be skipped. As root: apt-get update && apt-get install -y faketime"
  exit 0
}
if [ "$(id -u)" != "0" ]; then
  fail "no libfaketime and not root, so it cannot be installed here"
fi
if ! command -v apt-get >/dev/null; then
  fail "no libfaketime and no apt-get to install it"
fi
echo "installing faketime (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq || ! apt-get install -y -qq faketime >/dev/null; then
  fail "apt-get could not install faketime"
fi
compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null || fail "faketime was installed but libfaketime.so.1 is not there"
echo "libfaketime installed"
