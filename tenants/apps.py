from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"

    def ready(self) -> None:
        # Connects the audit entry of a login lock (django-axes' signal).
        from tenants import lockout  # noqa: F401
