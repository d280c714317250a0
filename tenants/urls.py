from django.urls import path

from tenants import views

urlpatterns = [
    path("", views.home, name="home"),
    path("t/<uuid:tenant_code>/audit/", views.audit_log, name="audit_log"),
]
