"""A URL configuration for tests of the error pages: the app's, plus a view that fails."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as app_urls


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret detail that must not reach the page")


urlpatterns = [path("broken/", broken), *app_urls]
