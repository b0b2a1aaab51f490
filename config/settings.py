"""Settings for every environment, read from the environment (see README, "Settings")."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str
from infra.redis_clients import channel_layer_host, parse_redis_target

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_SECRET_KEY = "dev-insecure-secret-key-change-me-in-production-0123456789"
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is the development default; set SECRET_KEY (or DEBUG=1 for development)."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,.localhost,127.0.0.1,[::1]")

# --- applications: django-tenants splits them into the public schema and each tenant's ---
SHARED_APPS = [
    "django_tenants",
    "daphne",  # makes `manage.py runserver` serve ASGI, WebSockets included
    "tenants",
    "django.contrib.contenttypes",
    "django.contrib.auth",  # platform admins live in the public schema
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc files, so /api/docs/ needs no CDN
    "django.contrib.staticfiles",  # the finders WhiteNoise serves app static files through
    "channels",
    # The job queue of webhook deliveries: its tables live in the public schema.
    "procrastinate.contrib.django",
    # Only for its abstract model (integrations.ApiKey is per tenant); its own table is unused.
    "rest_framework_api_key",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",  # each tenant's users live in its own schema
    "rest_framework_simplejwt.token_blacklist",
    "accounts",
    "chat",
    "integrations",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
# Issue `SET search_path` once per tenant switch, not before every query.
TENANT_LIMIT_SET_CALLS = True
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)

MIDDLEWARE = [
    "tenants.middleware.ActiveTenantMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # After the tenant middleware, so static files are served only on the hosts we serve.
    "config.static.StaticFilesMiddleware",  # WhiteNoise, async
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "config.urls"
PUBLIC_SCHEMA_URLCONF = "config.urls_public"
ASGI_APPLICATION = "config.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# --- database: one PostgreSQL, one schema per tenant ---
DATABASE_URL = env_str("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tenantchat")
_db = dj_database_url.parse(DATABASE_URL)
_db["ENGINE"] = "tenants.backend"
# ASGI serves requests from short-lived threads: persistent per-thread connections would
# leak, so connections come from psycopg's pool and go back to it after each request.
_db["CONN_MAX_AGE"] = 0
# PostgreSQL away: nothing waits for it longer than a few seconds. A request thread (REST)
# or a database thread waits at most DB_POOL_TIMEOUT for a pooled connection, and a new
# connection's TCP/TLS setup at most DB_CONNECT_TIMEOUT; both stay under
# DB_UNAVAILABLE_TIMEOUT so the failure, not a hang, is what the client gets (503, or the
# `unavailable` frame within the contract's 5 s).
_db.setdefault("OPTIONS", {})["pool"] = {
    "min_size": env_int("DB_POOL_MIN", 2),
    "max_size": env_int("DB_POOL_MAX", 16),
    "timeout": env_float("DB_POOL_TIMEOUT", 3.0),
    # Connections beyond min_size that sat unused this long are closed (psycopg's max_idle).
    "max_idle": env_float("DB_POOL_MAX_IDLE", 600.0),
}
_db["OPTIONS"]["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 3)
# The name this process's connections carry in pg_stat_activity, so an operator (or a test
# run near max_connections) can see which pods and workers hold the database's slots.
_db["OPTIONS"]["application_name"] = env_str("DB_APPLICATION_NAME", "tenantchat")
# The pool checks a connection before handing it out (psycopg_pool's check_connection), so
# one that PostgreSQL ended while it sat in the pool (restart, idle timeout) is replaced.
_db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
# Threads that run tenant-scoped database calls for WebSockets (each holds one connection).
DB_THREADS = env_int("DB_THREADS", 8)
# At most this many of them work for one schema at once (tenants/context.py, FairScheduler):
# another tenant's call never waits behind a busy tenant's backlog.
DB_THREADS_PER_TENANT = env_int("DB_THREADS_PER_TENANT", max(1, DB_THREADS // 2))
# A database thread's connection idle for longer than this is checked (SELECT 1) before its
# next call, and replaced if PostgreSQL ended it meanwhile.
DB_IDLE_CHECK_SECONDS = env_float("DB_IDLE_CHECK_SECONDS", 2.0)
# A tenant call (tenants/context.py in_schema) that has not answered within this many
# seconds is answered `unavailable` instead (PostgreSQL away or stuck); the contract wants
# the answer to a write frame within 5 s.
DB_UNAVAILABLE_TIMEOUT = env_float("DB_UNAVAILABLE_TIMEOUT", 4.0)
# The `retry_after` (seconds) of an `unavailable` frame and the Retry-After of a 503.
DB_UNAVAILABLE_RETRY_AFTER = env_int("DB_UNAVAILABLE_RETRY_AFTER", 2)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer ---
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# Redis Sentinel instead of REDIS_URL, for every Redis client (infra/redis_clients.py):
# REDIS_SENTINELS "host:port,host:port" and REDIS_SENTINEL_MASTER, the master's name.
REDIS_TARGET = parse_redis_target(
    REDIS_URL,
    env_str("REDIS_SENTINELS"),
    env_str("REDIS_SENTINEL_MASTER"),
    db=env_str("REDIS_SENTINEL_DB"),
    password=env_str("REDIS_SENTINEL_MASTER_PASSWORD"),
    sentinel_password=env_str("REDIS_SENTINEL_PASSWORD"),
    tls=env_bool("REDIS_SENTINEL_TLS", False),
)
CHANNEL_PREFIX = env_str("CHANNEL_PREFIX", "tc")  # Redis key prefix of layer, presence, cache
# The pub/sub layer: a group is a Redis PUBLISH channel, so a broadcast is one PUBLISH
# whatever the room size, there is no per-channel capacity that drops messages when full
# and no group expiry that silently unsubscribes a long-lived socket (README, "Channel layer").
CHANNEL_LAYERS = {
    "default": {
        # channels_redis.pubsub.RedisPubSubChannelLayer minus a lock around PUBLISH (chat/layer.py)
        "BACKEND": "chat.layer.RedisPubSubLayer",
        "CONFIG": {"hosts": [channel_layer_host(REDIS_TARGET)], "prefix": CHANNEL_PREFIX},
    }
}

# Shared by all pods: login throttling counts.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,  # unused with Sentinel: the pool class builds from REDIS_TARGET
        "KEY_PREFIX": CHANNEL_PREFIX,
        "OPTIONS": {"pool_class": "infra.redis_clients.DjangoCachePool"},
    }
}

# --- REST and JWT ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.TenantJWTAuthentication",
        "integrations.api_keys.ApiKeyAuthentication",  # `Authorization: Api-Key <key>`
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Ours: a body nested too deeply is a 400 (ParseError), not a RecursionError and a 500.
    "DEFAULT_PARSER_CLASSES": ["infra.parsers.JSONParser"],
    # A ChatError a view does not catch is answered by its code (404, 403, 429...), not a 500.
    "EXCEPTION_HANDLER": "chat.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    # Every REST write of a user takes from one bucket shared by all processes (the login
    # view sets its own throttles instead).
    "DEFAULT_THROTTLE_CLASSES": ["accounts.write_throttle.UserWriteThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "login": env_str("LOGIN_THROTTLE_RATE", "10/min"),  # per tenant and username
        # Per client IP: generous, many users may share one NAT address.
        "login_ip": env_str("LOGIN_THROTTLE_IP_RATE", "60/min"),
    },
    # Proxies in front of the app whose X-Forwarded-For entry the client IP is read from
    # (DRF's get_ident); 0: the connection's address (what uvicorn reports).
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_LIFETIME", 900)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_REFRESH_LIFETIME", 7 * 86400)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "TOKEN_OBTAIN_SERIALIZER": "accounts.serializers.TenantTokenObtainPairSerializer",
    "TOKEN_REFRESH_SERIALIZER": "accounts.serializers.TenantTokenRefreshSerializer",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "tenantchat API",
    "DESCRIPTION": "Multi-tenant chat: REST side of the client contract.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from the drf-spectacular-sidecar package, served by WhiteNoise.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Swagger UI would otherwise send the schema's URL to validator.swagger.io for a badge.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- chat ---
WS_PING_INTERVAL = env_float("WS_PING_INTERVAL", 30.0)
DRAIN_TIMEOUT = env_float("DRAIN_TIMEOUT", 10.0)  # SIGTERM: wait this long for 1001 closes
WS_REPLAY_LIMIT = 1000  # `since=` replays at most this many messages
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 1024 * 1024)
# The delivery path (chat/fanout.py). A socket whose unsent frames pass this many bytes
# (counted in the process, kernel buffers aside) is closed with 4408.
WS_MAX_OUTBOUND_BYTES = env_int("WS_MAX_OUTBOUND_BYTES", 1024 * 1024)
# A hole in a room's seq stream waits this long for the missing frame before it is read
# from PostgreSQL; a room that missed more than WS_REPAIR_LIMIT messages, or cannot be read
# for WS_REPAIR_GIVE_UP seconds, closes its sockets with 4409.
WS_GAP_WAIT = env_float("WS_GAP_WAIT", 0.5)
WS_REPAIR_LIMIT = env_int("WS_REPAIR_LIMIT", 1000)
WS_REPAIR_GIVE_UP = env_float("WS_REPAIR_GIVE_UP", 30.0)
# A group with no socket left on the process stays subscribed this long (a reconnect soon
# after finds it ready); a handshake waits at most WS_SUBSCRIBE_TIMEOUT for a subscription.
WS_FEED_LINGER = env_float("WS_FEED_LINGER", 30.0)
# The fan-out's pub/sub connection PINGs Redis when it heard nothing for this long, and is
# given up (reconnected, then repaired) after three times as long without an answer.
WS_PUBSUB_HEALTH_INTERVAL = env_float("WS_PUBSUB_HEALTH_INTERVAL", 5.0)
WS_SUBSCRIBE_TIMEOUT = env_float("WS_SUBSCRIBE_TIMEOUT", 2.0)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 4000)
CHAT_RATE_PER_SECOND = env_float("CHAT_RATE_PER_SECOND", 10.0)
CHAT_RATE_BURST = env_int("CHAT_RATE_BURST", 20)
# Open sockets (room + notification) of one user in one tenant, counted across processes.
WS_MAX_SOCKETS_PER_USER = env_int("WS_MAX_SOCKETS_PER_USER", 20)
# Rooms one user may create (by joining a missing room or POST /api/rooms/), per tenant,
# shared by all processes: "<count>/<s|min|h|d>", a bucket of <count> refilled over the period.
ROOM_CREATE_RATE = env_str("ROOM_CREATE_RATE", "10/min")
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|m|min|h|hour|d|day)", ROOM_CREATE_RATE):
    raise ImproperlyConfigured("ROOM_CREATE_RATE must look like 10/min (s, min, h or d).")
# Users a tenant's backend may create (first use of an external id, through a server token
# or a token it signed itself), per tenant and shared by all processes; same syntax.
USER_CREATE_RATE = env_str("USER_CREATE_RATE", "600/min")
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|m|min|h|hour|d|day)", USER_CREATE_RATE):
    raise ImproperlyConfigured("USER_CREATE_RATE must look like 600/min (s, min, h or d).")
CHAT_HISTORY_DEFAULT_LIMIT = 50
CHAT_HISTORY_MAX_LIMIT = 200
CHAT_SEARCH_DEFAULT_LIMIT = 20
CHAT_SEARCH_MAX_LIMIT = 100
# Search ranks only the newest this many matches of a query (0: every match); see chat/search.py.
# Searches a user may run, shared by all pods (a search can cost 100s of ms of PostgreSQL;
# history reads are cheap and not limited), and the longest one PostgreSQL runs before it
# is cancelled (an answer 503 with Retry-After, never a query left running).
SEARCH_RATE = env_str("SEARCH_RATE", "60/min")
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|m|min|h|hour|d|day)", SEARCH_RATE):
    raise ImproperlyConfigured("SEARCH_RATE must look like 60/min (s, min, h or d).")
SEARCH_TIMEOUT_MS = env_int("SEARCH_TIMEOUT_MS", 5000)
if SEARCH_TIMEOUT_MS < 1:
    raise ImproperlyConfigured("SEARCH_TIMEOUT_MS must be 1 or more.")
CHAT_SEARCH_RANK_WINDOW = env_int("CHAT_SEARCH_RANK_WINDOW", 10_000)
if CHAT_SEARCH_RANK_WINDOW < 0:
    raise ImproperlyConfigured("CHAT_SEARCH_RANK_WINDOW must be 0 or more.")
# Authorization is live: every process re-checks its open sockets' user, tenant and room
# this often (with jitter), in case a kick over the channel layer was lost. 0 disables it.
WS_AUTH_RECHECK_INTERVAL = env_float("WS_AUTH_RECHECK_INTERVAL", 30.0)
# Presence: a process's entries count while its key lives (PRESENCE_TTL seconds, refreshed
# every PRESENCE_HEARTBEAT); each beat also sweeps the rooms it holds, so a killed process's
# users leave within PRESENCE_TTL + PRESENCE_HEARTBEAT (the contract: 60 s).
PRESENCE_TTL = env_int("PRESENCE_TTL", 30)
PRESENCE_HEARTBEAT = env_float("PRESENCE_HEARTBEAT", 10.0)

# --- attachments (PROTOCOL section 6) ---
# Local files live under DATA_DIR/attachments/; S3_BUCKET moves them to an S3-compatible
# bucket (django-storages, boto3). Keys start with the tenant's schema name either way.
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / ".data"))).resolve()
ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 10 * 1024 * 1024)
ATTACHMENT_URL_TTL = env_int("ATTACHMENT_URL_TTL", 300)  # seconds a signed link works
ATTACHMENT_MAX_PER_MESSAGE = env_int("ATTACHMENT_MAX_PER_MESSAGE", 10)
# Uploads never attached to a message are removed after this many hours, by the hourly
# `chat.sweep_attachments` task of the worker processes (or `manage.py attachments_sweep`).
ATTACHMENT_UNLINKED_HOURS = env_int("ATTACHMENT_UNLINKED_HOURS", 24)
# Bytes of attachments one tenant may keep (unlinked uploads included); a tenant's own
# `attachment_quota_bytes` (platform API) replaces it. An upload past it is a 413.
ATTACHMENT_TENANT_QUOTA_BYTES = env_int("ATTACHMENT_TENANT_QUOTA_BYTES", 1024**3)
if ATTACHMENT_TENANT_QUOTA_BYTES < 0:
    raise ImproperlyConfigured("ATTACHMENT_TENANT_QUOTA_BYTES must be 0 or more.")
if ATTACHMENT_MAX_BYTES < 1 or ATTACHMENT_URL_TTL < 1 or ATTACHMENT_MAX_PER_MESSAGE < 1:
    raise ImproperlyConfigured(
        "ATTACHMENT_MAX_BYTES, ATTACHMENT_URL_TTL and ATTACHMENT_MAX_PER_MESSAGE must be >= 1."
    )
S3_BUCKET = env_str("S3_BUCKET")
if S3_BUCKET:
    _attachments_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL") or None,
            "region_name": env_str("S3_REGION") or None,
            # Read from the environment here (boto3 would too); never logged.
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            "signature_version": "s3v4",
            # Path-style (`endpoint/bucket/key`): what MinIO, Ceph and moto serve without
            # wildcard DNS; AWS itself picks its own style when no endpoint is given.
            "addressing_style": "path" if env_str("S3_ENDPOINT_URL") else None,
            "querystring_auth": True,  # presigned GET links ...
            "querystring_expire": ATTACHMENT_URL_TTL,  # ... that expire with the local ones
            "file_overwrite": True,  # keys carry a random part: no HEAD before each upload
            "default_acl": None,  # private objects: the presigned link is the only way in
        },
    }
else:
    _attachments_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DATA_DIR / "attachments")},
    }
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "attachments": _attachments_storage,
}
# Uploads past this many bytes are spooled to a temporary file, not held in memory (Django's
# default, stated here because attachments rely on it); form fields other than files stay
# under DATA_UPLOAD_MAX_MEMORY_SIZE (also Django's default, 2.5 MiB).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2621440

# --- tenant integration (PROTOCOL section 5) ---
# Seconds between the attempts of a webhook delivery (8 attempts by default), then `failed`.
WEBHOOK_RETRY_SCHEDULE = [
    float(v) for v in env_str("WEBHOOK_RETRY_SCHEDULE", "5,30,120,600,3600,21600,86400").split(",")
]
if any(v < 0 for v in WEBHOOK_RETRY_SCHEDULE):
    raise ImproperlyConfigured("WEBHOOK_RETRY_SCHEDULE: comma-separated non-negative seconds.")
# Finished deliveries (delivered or failed) are kept this many days in the delivery log,
# then removed by the workers' hourly `integrations.remove_old_deliveries` task.
WEBHOOK_DELIVERY_RETENTION_DAYS = env_int("WEBHOOK_DELIVERY_RETENTION_DAYS", 30)
if WEBHOOK_DELIVERY_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("WEBHOOK_DELIVERY_RETENTION_DAYS must be 1 or more.")
WEBHOOK_TIMEOUT = env_float("WEBHOOK_TIMEOUT", 10.0)  # an attempt without a 2xx by then fails
# Attempts in flight at once, across all workers: per webhook (a burst goes out as fast as the
# endpoint takes it) and per tenant (no tenant, no dead endpoint, holds more than its share).
WEBHOOK_MAX_IN_FLIGHT = env_int("WEBHOOK_MAX_IN_FLIGHT", 10)
WEBHOOK_TENANT_SLOTS = env_int("WEBHOOK_TENANT_SLOTS", 20)
if WEBHOOK_MAX_IN_FLIGHT < 1 or WEBHOOK_TENANT_SLOTS < 1:
    raise ImproperlyConfigured("WEBHOOK_MAX_IN_FLIGHT and WEBHOOK_TENANT_SLOTS must be 1 or more.")
# Development only: webhooks may point at loopback, private and link-local addresses.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
# A worker that stopped updating its heartbeat for WEBHOOK_STALLED_SECONDS is dead (SIGKILL,
# OOM): its running jobs are queued again by a check every WEBHOOK_STALLED_CHECK_SECONDS.
WEBHOOK_WORKER_HEARTBEAT = env_float("WEBHOOK_WORKER_HEARTBEAT", 10.0)
WEBHOOK_STALLED_SECONDS = env_float("WEBHOOK_STALLED_SECONDS", 30.0)
WEBHOOK_STALLED_CHECK_SECONDS = env_int("WEBHOOK_STALLED_CHECK_SECONDS", 10)
if not 1 <= WEBHOOK_STALLED_CHECK_SECONDS <= 59:
    raise ImproperlyConfigured("WEBHOOK_STALLED_CHECK_SECONDS must be 1 to 59.")
if WEBHOOK_STALLED_SECONDS <= WEBHOOK_WORKER_HEARTBEAT:
    raise ImproperlyConfigured("WEBHOOK_STALLED_SECONDS must exceed WEBHOOK_WORKER_HEARTBEAT.")
# `manage.py webhook_worker` serves its delivery counts at http://ADDR:PORT/metrics (0: off;
# deploy/ sets 9100).
WEBHOOK_WORKER_METRICS_PORT = env_int("WEBHOOK_WORKER_METRICS_PORT", 0)
# All interfaces by default: Prometheus scrapes the worker pod from outside it.
WEBHOOK_WORKER_METRICS_ADDR = env_str("WEBHOOK_WORKER_METRICS_ADDR", "0.0.0.0")  # noqa: S104
PROCRASTINATE_WORKER_DEFAULTS = {
    "update_heartbeat_interval": WEBHOOK_WORKER_HEARTBEAT,
    "stalled_worker_timeout": WEBHOOK_STALLED_SECONDS,
}

# --- platform bootstrap (make run) ---
PLATFORM_ADMIN_USER = env_str("PLATFORM_ADMIN_USER", "platform")
PLATFORM_ADMIN_PASSWORD = env_str("PLATFORM_ADMIN_PASSWORD", "platform-password")

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
# Static files (Swagger UI's, the apps' own) are served by the ASGI process itself through
# WhiteNoise, straight from the installed apps' static/ folders via Django's finders: no
# collectstatic step and no STATIC_ROOT, so `make run`, the tests and a bare
# `uvicorn config.asgi:application` pod (read-only root filesystem included) all serve them.
# The file list is read once at start-up; DEBUG re-reads it on every request (autorefresh).
# /static/chat/client.js is clients/js/client.js itself (config/static.BrowserClientFinder).
STATIC_URL = "static/"
STATICFILES_FINDERS = [
    "config.static.BrowserClientFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# One JSON object a line in production; readable lines in development.
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_secrets": {"()": "infra.logging.RedactSecretsFilter"},
        "request_context": {"()": "infra.logging.RequestContextFilter"},
    },
    "formatters": {
        "json": {"()": "infra.logging.JsonFormatter"},
        "text": {"format": "%(levelname)s %(name)s [%(tenant)s %(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["redact_secrets", "request_context"],
            "formatter": LOG_FORMAT,
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
