"""Settings. Nothing set = the embedded profile: SQLite (WAL) + django-q2's ORM broker.

Production profile: DATABASE_URL=postgres://... and REDIS_URL=redis://... (see .env.example).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_str
from lib.slots import MAX_TIME_LIMIT_MINUTES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = [h.strip() for h in (env_str("ALLOWED_HOSTS") or "127.0.0.1,localhost").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in (env_str("CSRF_TRUSTED_ORIGINS") or "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_q",
    "axes",
    "tenants",
    "backups",
    "scheduling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page prints times on the viewer's clock (the browser's zone, from a cookie).
    "tenants.middleware.ViewerZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "scheduling.context_processors.dispatcher_health",
            ],
        },
    }
]


def _private_sqlite_file(path: Path) -> Path:
    """The database file, readable by its owner only: it holds every encrypted source
    password and every session. Made empty (SQLite takes an empty file as a new database)
    so it never exists world-readable; SQLite gives its -wal and -shm files the database
    file's permissions. An existing one, and its -wal/-shm, are set to 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for existing in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                if existing.stat().st_mode & 0o077:
                    existing.chmod(0o600)
            except (FileNotFoundError, PermissionError):
                continue
    return path


def _database() -> dict[str, Any]:
    url = env_str("DATABASE_URL")
    if url:
        config: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True))
    else:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        config = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_private_sqlite_file(VAR_DIR / "db.sqlite3"))}
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets the web server read while a worker writes; IMMEDIATE takes the
        # write lock when a transaction starts, so concurrent writers queue on
        # busy_timeout instead of failing with "database is locked" mid-transaction.
        config["OPTIONS"] = {
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                " PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY; PRAGMA mmap_size=268435456;"
            ),
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
        # A file, not :memory:, so tests can start real second processes against it.
        config["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME") or str(VAR_DIR / "test-db.sqlite3")}
    elif env_str("TEST_DATABASE_NAME"):
        # Several test runs against one server (parallel checkouts) each need their own.
        config["TEST"] = {"NAME": env_str("TEST_DATABASE_NAME")}
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: it refuses a locked-out username or address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# ---------------------------------------------------------------- web hardening (docs/security.md)
# Login throttling (django-axes), for the login page and the admin's alike: after
# LOGIN_FAILURE_LIMIT failed logins a username is locked, and so, separately, is the
# client address, for LOGIN_LOCKOUT_MINUTES. tenants/lockout.py records each lock in the audit log.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "tenants.lockout.lockout_page"
AXES_CLIENT_IP_CALLABLE = "tenants.lockout.client_ip"
# Behind N reverse proxies that each append to X-Forwarded-For, the client is the Nth
# address from the right; 0 = no proxy, REMOTE_ADDR (a client-sent header is never trusted).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

# Only the app's own files may run or style a page: no inline script, style or handler.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# The page uses none of these browser features; an injected frame or script gets none either.
PERMISSIONS_POLICY: dict[str, list[str]] = {
    name: []
    for name in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
    )
}

# HTTPS deployment: all off by default (`make run` serves plain HTTP on loopback);
# .env.example lists the production values, with which `manage.py check --deploy` is clean.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load balancers and uptime monitors may probe over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)


def _proxy_ssl_header() -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER as "X-Forwarded-Proto: https" (set only behind a proxy that sets it)."""
    raw = (env_str("SECURE_PROXY_SSL_HEADER") or "").strip()
    if not raw:
        return None
    header, sep, value = raw.partition(":")
    if not sep or not header.strip() or not value.strip():
        raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https', not {raw!r}")
    return "HTTP_" + header.strip().upper().replace("-", "_"), value.strip()


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header()

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# ---------------------------------------------------------------- backups
BACKUPS_DIR = Path(env_str("BACKUPS_DIR") or VAR_DIR / "backups")
# Before a run starts, the local storage must have at least this much free, or the
# schedule's last set size plus 10% if that is more (scheduling.retention.estimated_size).
BACKUPS_MIN_FREE_BYTES = env_int("BACKUPS_MIN_FREE_BYTES", 16 * 1024 * 1024, minimum=0)
# A stored file no backup item names is removed by the cluster's sweep (backups.orphans)
# once it is this old. Never less than the longest time limit a run may have plus an hour:
# a run's files are stored as its items finish and named only when its set is recorded at
# its end, so a younger file may belong to a run still going on some node.
BACKUPS_ORPHAN_MIN_HOURS = MAX_TIME_LIMIT_MINUTES // 60 + 1
BACKUPS_ORPHAN_AFTER_HOURS = env_int(
    "BACKUPS_ORPHAN_AFTER_HOURS", BACKUPS_ORPHAN_MIN_HOURS, minimum=BACKUPS_ORPHAN_MIN_HOURS
)


def _backups_storage() -> dict[str, Any]:
    """STORAGES["backups"]: a local folder (BACKUPS_DIR) or, with BACKUPS_STORAGE=s3, a bucket."""
    kind = (env_str("BACKUPS_STORAGE") or "local").strip().lower()
    if kind == "local":
        # backups.storage always uses BACKUPS_DIR as a local storage's location.
        return {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(BACKUPS_DIR)}}
    if kind != "s3":
        raise ImproperlyConfigured(f"BACKUPS_STORAGE must be local or s3, not {kind!r}")
    bucket = env_str("BACKUPS_S3_BUCKET")
    if not bucket:
        raise ImproperlyConfigured("BACKUPS_S3_BUCKET (or BACKUPS_S3_BUCKET_FILE) must be set with BACKUPS_STORAGE=s3")
    options: dict[str, Any] = {
        "bucket_name": bucket,
        # The prefix every key is stored under ("" = the bucket's top level).
        "location": (env_str("BACKUPS_S3_PREFIX") or "").strip("/"),
        "endpoint_url": env_str("BACKUPS_S3_ENDPOINT_URL") or None,
        "region_name": env_str("BACKUPS_S3_REGION") or None,
        # Unset = boto3's own chain (instance role, AWS_* variables, ~/.aws).
        "access_key": env_str("BACKUPS_S3_ACCESS_KEY_ID") or None,
        "secret_key": env_str("BACKUPS_S3_SECRET_ACCESS_KEY") or None,
        "default_acl": None,
        "querystring_auth": True,
        # Keys are unique per run; never rename on a clash.
        "file_overwrite": True,
    }
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "backups": _backups_storage(),
}
# File sources (SQLite files, folders) must live under one of these folders; staff give
# each tenant its own roots inside them (Tenant.file_roots).
SOURCE_ROOTS = [
    Path(p).resolve() for p in (env_str("SOURCE_ROOTS") or str(VAR_DIR / "sources")).split(",") if p.strip()
]
# Database servers a tenant's PostgreSQL / MariaDB sources may connect to, unless staff give
# the tenant rules of its own (Tenant.server_hosts): IP addresses, networks, host names or *.


def _source_allowed_hosts() -> list[str]:
    import ipaddress
    import re

    rules = [h.strip() for h in (env_str("SOURCE_ALLOWED_HOSTS") or "127.0.0.1,::1,localhost").split(",") if h.strip()]
    for rule in rules:
        try:
            ipaddress.ip_network(rule, strict=False)
        except ValueError:
            if rule != "*" and not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?\.?", rule):
                raise ImproperlyConfigured(
                    f"SOURCE_ALLOWED_HOSTS: {rule!r} is neither an IP address, a network, a host name nor *"
                ) from None
    return rules


SOURCE_ALLOWED_HOSTS = _source_allowed_hosts()
# "Test connection" requests per tenant and minute (each is a task on the queue).
SOURCE_TESTS_PER_MINUTE = env_int("SOURCE_TESTS_PER_MINUTE", 6, minimum=1)

# ---------------------------------------------------------------- source secrets
# Fernet keys that encrypt source passwords at rest (backups/secrets.py), comma-separated.
# The first encrypts; all decrypt, so a key is rotated by putting a new one first and
# running `manage.py rotate_source_secrets` before removing the old one (docs/security.md).


def _development_key(path: Path) -> str:
    """Development only: a random key of this installation, made on first start (`make run`)
    in a 0600 file, so a fresh checkout works without setup and no public value (such as
    the development SECRET_KEY) decrypts its passwords."""
    from cryptography.fernet import Fernet

    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written aside and linked into place: a second process starting at the same time
        # either links first or reads the complete key of the one that did.
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode() + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()


def _source_secret_keys() -> list[str]:
    from cryptography.fernet import Fernet

    keys = [k.strip() for k in (env_str("SOURCE_SECRET_KEYS") or "").split(",") if k.strip()]
    if not keys:
        if not DEBUG:
            raise ImproperlyConfigured(
                "SOURCE_SECRET_KEYS (or SOURCE_SECRET_KEYS_FILE) must be set when DEBUG is off; make one with"
                ' python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            )
        keys = [_development_key(VAR_DIR / "source-secret.key")]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            # The key itself is never shown: it is a secret.
            raise ImproperlyConfigured(
                f"SOURCE_SECRET_KEYS: key number {position} is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None
    return keys


SOURCE_SECRET_KEYS = _source_secret_keys()

# ---------------------------------------------------------------- dispatcher
DISPATCHER_ENABLED = env_bool("DISPATCHER_ENABLED", True)
# A slot older than this when the dispatcher reaches it is recorded as missed, not run.
DISPATCH_GRACE_SECONDS = env_int("DISPATCH_GRACE_SECONDS", 300, minimum=0)
# A node whose clock is further than this from the database's marks no slot missed and is
# shown in scheduler health. NTP keeps nodes within milliseconds, and a reading is uncertain
# by half a round trip, so 30 s is no measurement noise; it is still well inside the grace
# above and the age at which a silent run is given up for lost, the spans a wrong clock would misjudge.
CLOCK_SKEW_LIMIT_SECONDS = env_int("CLOCK_SKEW_LIMIT_SECONDS", 30, minimum=1)
# At most this many runs of one tenant run at once (0 = no limit): a worker that takes a
# run of a tenant at its limit leaves it queued for a later pass (scheduling.lifecycle.claim),
# so one tenant's pile of verifies cannot hold every worker while others wait.
TENANT_MAX_RUNNING = env_int("TENANT_MAX_RUNNING", 2, minimum=0)
# On SIGTERM / Ctrl-C, runcluster lets running backups finish for this long, then
# interrupts them (INTERRUPTED, retried automatically) and exits within 30 s more
# (scheduling/shutdown.py; the systemd unit in docs/operations.md). 90 s: a small
# database's dump in progress finishes rather than starting over, while a restart or
# a deploy waits no longer than systemd's own default stop timeout.
SHUTDOWN_GRACE_SECONDS = env_int("SHUTDOWN_GRACE_SECONDS", 90, minimum=0)

# ---------------------------------------------------------------- task queue
REDIS_URL = env_str("REDIS_URL")
Q_WORKERS = env_int("Q_WORKERS", 2, minimum=1)


def _redis_url_with_timeouts(url: str) -> str:
    """REDIS_URL with socket timeouts unless it names its own: without them a Redis that
    stops answering (a dead host, a dropped route) would hang a dispatcher pass, a page
    pushing a task, or a cluster's pusher, for good. The socket timeout must outlast the
    pusher's 1-second BLPOP; redis-py reads both from the URL's query."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_connect_timeout", "5")
    query.setdefault("socket_timeout", "10")
    return urlunsplit(parts._replace(query=urlencode(query)))


Q_CLUSTER: dict = {
    "name": env_str("Q_CLUSTER_NAME") or "backups",
    "workers": Q_WORKERS,
    # Tasks a cluster takes ahead of its workers (django-q2's default: workers squared). A
    # cluster killed while holding them loses them until the dispatcher's look for lost
    # tasks gives them out again (scheduling.queue.requeue_lost), and while its workers
    # are busy they wait there instead of going to an idle cluster: backups run for
    # minutes, so one ready task per worker costs no throughput and bounds both.
    "queue_limit": Q_WORKERS,
    # Backups may run for hours; our own run status (compare-and-swap) guards
    # against a second execution, so redelivery after `retry` is harmless.
    "timeout": env_int("Q_TIMEOUT", 6 * 3600, minimum=60),
    "retry": env_int("Q_TIMEOUT", 6 * 3600, minimum=60) + 300,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.2,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = _redis_url_with_timeouts(REDIS_URL)
else:
    Q_CLUSTER["orm"] = "default"

# ---------------------------------------------------------------- e-mail
# Failed, partial and missed backups are mailed to the tenant's managers and owners
# (scheduling/notifications.py). Development prints mail on the console; production sets
# EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and the EMAIL_HOST_* values.
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or "django.core.mail.backends.console.EmailBackend"
EMAIL_HOST = env_str("EMAIL_HOST") or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD") or ""  # or EMAIL_HOST_PASSWORD_FILE
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be true")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or "backups@localhost"
EMAIL_SUBJECT_PREFIX = env_str("EMAIL_SUBJECT_PREFIX", "[Backups] ") or ""
EMAIL_NOTIFICATIONS = env_bool("EMAIL_NOTIFICATIONS", True)
# Where links in e-mails point: this server as its users reach it.
SITE_URL = env_str("SITE_URL") or "http://127.0.0.1:8000"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {
        "django_q": {"level": env_str("Q_LOG_LEVEL") or "WARNING"},
        # Its locks are warnings; its INFO lines (one per process start, per failed login) are noise.
        "axes": {"level": "WARNING"},
    },
}
