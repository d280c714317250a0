#!/usr/bin/env bash
# The whole suite, in both profiles:
#   1. embedded: SQLite (WAL) + django-q2's ORM broker
#   2. production: PostgreSQL + Redis broker (the real servers on 127.0.0.1)
# Both include the browser tests (tests/browser/, Playwright + /usr/bin/chromium, which
# scripts/ensure-browser.sh installs through apt where missing).
# Where PostgreSQL or Redis is absent the second profile is skipped with the reason,
# except under CI=true, where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

echo "== lint: ruff, mypy, import contracts (the same as make lint)"
$BIN/ruff check .
$BIN/mypy lib scheduling backups tenants config
$BIN/lint-imports --no-cache
env -u DATABASE_URL -u REDIS_URL $BIN/pytest -q -p no:cacheprovider tests/test_architecture.py

echo "== browser: Debian's chromium for tests/browser/"
bash scripts/ensure-browser.sh

echo "== faketime: libfaketime for the clock skew tests"
bash scripts/ensure-faketime.sh

echo "== embedded profile: SQLite + ORM broker"
env -u DATABASE_URL -u REDIS_URL $BIN/pytest -q -p no:cacheprovider

PG_URL=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
missing=""
$BIN/python - "$PG_URL" <<'PY' || missing="PostgreSQL at ${PG_URL}"
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
$BIN/python - "$REDIS" <<'PY' || missing="${missing:+$missing and }Redis at ${REDIS}"
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3).ping()
PY
if [ -n "$missing" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "FAILED: production profile needs $missing, which is not reachable (CI=true)." >&2
    exit 1
  fi
  echo "SKIPPED production profile: $missing not reachable. Start it (see docs/development.md) to run it."
  exit 0
fi

echo "== production profile: PostgreSQL + Redis broker"
DATABASE_URL=$PG_URL REDIS_URL=$REDIS Q_CLUSTER_NAME=backups-test \
  $BIN/pytest -q -p no:cacheprovider --ignore=tests/lib/test_slots_oracle.py --ignore=tests/lib/test_slots.py
