# Two commands: `make run` (set up and start everything on SQLite) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-browser browser-deps faketime-deps lint bench-dispatch bench-backup bench-ui bench-faults clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The first start makes var/source-secret.key (0600), the development key of source
# passwords, and the SQLite database 0600 (config/settings.py).
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	bash scripts/serve.sh

test: $(VENV)/.dev-installed
	bash scripts/test.sh

# Debian's chromium for the browser tests (apt, as root; never `playwright install`).
browser-deps:
	bash scripts/ensure-browser.sh

# Debian's faketime for the clock skew tests (apt, as root).
faketime-deps:
	bash scripts/ensure-faketime.sh

# Only the browser tests (SQLite profile); screenshots land in test-artifacts/screenshots/.
test-browser: $(VENV)/.dev-installed browser-deps
	env -u DATABASE_URL -u REDIS_URL $(VENV)/bin/pytest -q -p no:cacheprovider -m browser tests/browser

# Style, types (a stale `# type: ignore` is an error) and the one-way architecture:
# lint-imports keeps the contracts in pyproject.toml, tests/test_architecture.py the rest.
lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy lib scheduling backups tenants config
	$(VENV)/bin/lint-imports --no-cache
	env -u DATABASE_URL -u REDIS_URL $(VENV)/bin/pytest -q -p no:cacheprovider tests/test_architecture.py

bench-dispatch: $(VENV)/.dev-installed
	$(PY) bench/dispatch.py --schedules 10000

# Runs and schedules pages at 10,000 and 1,000,000 runs, and Run now -> running on a real cluster.
bench-backup: $(VENV)/.dev-installed
	$(PY) bench/backup.py

bench-ui: $(VENV)/.dev-installed
	$(PY) bench/ui.py

# Faults caused for real on both profiles side by side (under 30 minutes; loopback PostgreSQL,
# redis-server, pg_dump and faketime): exits 1 if a recovery bound is missed.
bench-faults: $(VENV)/.dev-installed
	$(PY) bench/faults.py

clean:
	rm -rf $(VENV) var
