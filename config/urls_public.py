"""URLs of the platform host (`localhost`): operator endpoints only."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter
from rest_framework_simplejwt.views import TokenRefreshView

from accounts.views import TokenObtainView
from tenants.api import TenantViewSet
from tenants.pages import platform_home

router = SimpleRouter()
router.register("api/tenants", TenantViewSet, basename="tenant")

urlpatterns = [
    path("", platform_home, name="home"),
    path("api/auth/token/", TokenObtainView.as_view(), name="token-obtain"),
    path("api/auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    # Without `urlconf`, drf-spectacular would describe ROOT_URLCONF (the tenant API).
    path("api/schema/", SpectacularAPIView.as_view(urlconf="config.urls_public"), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    *router.urls,
]
