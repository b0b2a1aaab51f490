from django.urls import path

from integrations import api

urlpatterns = [
    path("api/keys/", api.ApiKeyListCreateView.as_view(), name="api-keys"),
    path("api/keys/<str:key_id>/", api.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("api/server/tokens/", api.ServerTokenView.as_view(), name="server-tokens"),
    path("api/signing-keys/", api.SigningKeyListCreateView.as_view(), name="signing-keys"),
    path("api/signing-keys/<str:kid>/", api.SigningKeyDetailView.as_view(), name="signing-key"),
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
