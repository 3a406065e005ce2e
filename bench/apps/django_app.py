"""Minimal single-file Django app."""

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="osprey-bench-not-secret",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )

from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402


def index(request):
    return HttpResponse("Hello, World!")


urlpatterns = [path("", index)]

application = get_wsgi_application()
app = application
