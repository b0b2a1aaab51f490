from django.urls import path, register_converter

from integrations import api


class AnyKidConverter:
    """Any `kid` a row may hold: new ones follow PROTOCOL section 5's characters, but keys
    registered before that rule may carry `/`, spaces or newlines (percent-encoded by the
    client, decoded by the server), and must still be revocable."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(AnyKidConverter, "any_kid")

urlpatterns = [
    path("api/keys/", api.ApiKeyListCreateView.as_view(), name="api-keys"),
    path("api/keys/<str:key_id>/", api.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("api/server/tokens/", api.ServerTokenView.as_view(), name="server-tokens"),
    path("api/signing-keys/", api.SigningKeyListCreateView.as_view(), name="signing-keys"),
    path("api/signing-keys/<any_kid:kid>/", api.SigningKeyDetailView.as_view(), name="signing-key"),
    path("api/webhooks/", api.WebhookListCreateView.as_view(), name="webhooks"),
    path("api/webhooks/<int:pk>/", api.WebhookDetailView.as_view(), name="webhook-detail"),
    path(
        "api/webhooks/<int:pk>/deliveries/",
        api.DeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "api/webhooks/<int:pk>/deliveries/<int:delivery_id>/retry/",
        api.DeliveryRetryView.as_view(),
        name="webhook-delivery-retry",
    ),
]
