"""Settings for every environment, read from the environment (see README, "Settings")."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_list, env_str

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
    "channels",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",  # each tenant's users live in its own schema
    "rest_framework_simplejwt.token_blacklist",
    "accounts",
    "chat",
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
_db.setdefault("OPTIONS", {})["pool"] = {
    "min_size": env_int("DB_POOL_MIN", 2),
    "max_size": env_int("DB_POOL_MAX", 16),
    "timeout": env_float("DB_POOL_TIMEOUT", 10.0),
}
DATABASES = {"default": _db}
# Threads that run tenant-scoped database calls for WebSockets (each holds one connection).
DB_THREADS = env_int("DB_THREADS", 8)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer ---
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_PREFIX = env_str("CHANNEL_PREFIX", "tc")  # Redis key prefix of layer, presence, cache
# The pub/sub layer: a group is a Redis PUBLISH channel, so a broadcast is one PUBLISH
# whatever the room size, there is no per-channel capacity that drops messages when full
# and no group expiry that silently unsubscribes a long-lived socket (README, "Channel layer").
CHANNEL_LAYERS = {
    "default": {
        # channels_redis.pubsub.RedisPubSubChannelLayer minus a lock around PUBLISH (chat/layer.py)
        "BACKEND": "chat.layer.RedisPubSubLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": CHANNEL_PREFIX},
    }
}

# Shared by all pods: login throttling counts.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": CHANNEL_PREFIX,
    }
}

# --- REST and JWT ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.TenantJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_RATES": {"login": env_str("LOGIN_THROTTLE_RATE", "10/min")},
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
}

# --- chat ---
WS_PING_INTERVAL = env_float("WS_PING_INTERVAL", 30.0)
DRAIN_TIMEOUT = env_float("DRAIN_TIMEOUT", 10.0)  # SIGTERM: wait this long for 1001 closes
WS_REPLAY_LIMIT = 1000  # `since=` replays at most this many messages
WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 1024 * 1024)
CHAT_MAX_MESSAGE_CHARS = env_int("CHAT_MAX_MESSAGE_CHARS", 4000)
CHAT_RATE_PER_SECOND = env_float("CHAT_RATE_PER_SECOND", 10.0)
CHAT_RATE_BURST = env_int("CHAT_RATE_BURST", 20)
CHAT_HISTORY_DEFAULT_LIMIT = 50
CHAT_HISTORY_MAX_LIMIT = 200
# Authorization is live: every process re-checks its open sockets' user, tenant and room
# this often (with jitter), in case a kick over the channel layer was lost. 0 disables it.
WS_AUTH_RECHECK_INTERVAL = env_float("WS_AUTH_RECHECK_INTERVAL", 30.0)
# Presence: a process's entries count while its key lives (PRESENCE_TTL seconds, refreshed
# every PRESENCE_HEARTBEAT); each beat also sweeps the rooms it holds, so a killed process's
# users leave within PRESENCE_TTL + PRESENCE_HEARTBEAT (the contract: 60 s).
PRESENCE_TTL = env_int("PRESENCE_TTL", 30)
PRESENCE_HEARTBEAT = env_float("PRESENCE_HEARTBEAT", 10.0)

# --- platform bootstrap (make run) ---
PLATFORM_ADMIN_USER = env_str("PLATFORM_ADMIN_USER", "platform")
PLATFORM_ADMIN_PASSWORD = env_str("PLATFORM_ADMIN_PASSWORD", "platform-password")

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
STATIC_URL = "static/"

# One JSON object a line in production; readable lines in development.
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact_secrets": {"()": "config.logging.RedactSecretsFilter"},
        "request_context": {"()": "config.logging.RequestContextFilter"},
    },
    "formatters": {
        "json": {"()": "config.logging.JsonFormatter"},
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
