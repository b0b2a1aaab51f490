"""Seed-style baseline: the Channels tutorial/cheatsheet setup, no tenants, default
`RedisChannelLayer`, its own PostgreSQL database (SEED_DATABASE_URL, default bench_seed)."""

import os

import dj_database_url

SECRET_KEY = os.environ["SECRET_KEY"]  # the project's key: the same JWTs are accepted
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "seedchat",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "seedchat.urls"
ASGI_APPLICATION = "seedchat.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("SEED_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bench_seed")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The default layer, as in the tutorial: one Redis list per channel, capacity 100, expiry 60.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("SEED_CHANNEL_PREFIX", "asgi-seed"),
        },
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
