from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    """The tenant's own backend: server API keys, signing keys, webhooks (PROTOCOL section 5)."""

    name = "integrations"
    default_auto_field = "django.db.models.BigAutoField"
