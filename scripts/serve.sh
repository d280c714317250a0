#!/usr/bin/env bash
# Start the web server and the cluster (workers + minute dispatcher) together;
# Ctrl-C (or either one dying) stops both.
set -uo pipefail
cd "$(dirname "$0")/.."
# Whatever the web server and the cluster write (the SQLite database, its -wal/-shm, backups,
# the development key in var/) is for this user only.
umask 077
PY=.venv/bin/python
ADDRESS=${ADDRESS:-127.0.0.1:8000}

$PY manage.py runcluster &
cluster=$!
$PY manage.py runserver --noreload "$ADDRESS" &
web=$!

stop() {
  trap - INT TERM
  kill -TERM "$cluster" "$web" 2>/dev/null
  wait "$cluster" "$web" 2>/dev/null
  echo "Stopped."
}
trap 'stop; exit 0' INT TERM
echo "Web: http://$ADDRESS/  (Ctrl-C stops the web server and the cluster)"
wait -n "$cluster" "$web"
status=$?
stop
exit "$status"
