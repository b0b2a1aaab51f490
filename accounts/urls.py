from django.urls import path
from rest_framework.routers import SimpleRouter
from rest_framework_simplejwt.views import TokenRefreshView

from accounts.admin_api import UserViewSet
from accounts.views import LogoutView, MeView, TokenObtainView

router = SimpleRouter()
router.register("api/users", UserViewSet, basename="user")

auth_urlpatterns = [
    path("api/auth/token/", TokenObtainView.as_view(), name="token-obtain"),
    path("api/auth/token/refresh/", TokenRefreshView.as_view(), name="token-refresh"),
    path("api/auth/logout/", LogoutView.as_view(), name="logout"),
]

urlpatterns = [
    *auth_urlpatterns,
    path("api/me/", MeView.as_view(), name="me"),
    *router.urls,
]
