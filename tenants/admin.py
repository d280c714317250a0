from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import User
from django.http import HttpRequest

from tenants.admin_readonly import ReadOnlyAdmin
from tenants.audit import record
from tenants.models import AuditAction, AuditLog, Membership, Tenant
from tenants.validators import validate_plain_text


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class LinesField(forms.CharField):
    """A list of strings as one per line: Tenant.file_roots, Tenant.server_hosts (Tenant.clean checks them)."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 80})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value: Any) -> Any:  # the lines, a list[str] (CharField's says str)
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class TenantAdminForm(forms.ModelForm):
    file_roots = LinesField(
        required=False,
        help_text="Folders this tenant's file sources may read and restores may write, one absolute path per line."
        " Each must lie inside the server's SOURCE_ROOTS and must not be, lie in or contain another tenant's.",
    )
    server_hosts = LinesField(
        required=False,
        label="Database servers",
        help_text="Where this tenant's PostgreSQL and MariaDB sources may connect, one per line: an IP address,"
        " a network (10.0.5.0/24), a host name, or * for anywhere. Empty: the server's SOURCE_ALLOWED_HOSTS.",
    )

    class Meta:
        model = Tenant
        fields = ["name", "file_roots", "server_hosts"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    form = TenantAdminForm
    list_display = ["name", "code", "created_at"]
    search_fields = ["name", "=code"]
    readonly_fields = ["code", "created_at"]
    inlines = [MembershipInline]

    def save_model(self, request: HttpRequest, obj: Tenant, form: forms.ModelForm, change: bool) -> None:
        before = list(form.initial.get("file_roots") or []) if change else []
        hosts_before = list(form.initial.get("server_hosts") or []) if change else []
        super().save_model(request, obj, form, change)
        if list(obj.file_roots) != before:
            record(obj, AuditAction.TENANT_ROOTS_CHANGED, obj, actor=request.user, before=before, after=obj.file_roots)
        if list(obj.server_hosts) != hosts_before:
            record(
                obj,
                AuditAction.TENANT_HOSTS_CHANGED,
                obj,
                actor=request.user,
                before=hosts_before,
                after=obj.server_hosts,
            )


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "user__email", "tenant__name"]
    list_select_related = ["user", "tenant"]
    autocomplete_fields = ["user", "tenant"]


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    """Read-only: the trail is written by the code paths it records, never edited by hand."""

    list_display = ["created_at", "tenant", "actor_label", "action", "target_type", "target_label"]
    list_filter = ["action", "target_type", "tenant"]
    search_fields = ["target_label", "=target_code", "=code", "actor__username"]
    list_select_related = ["tenant", "actor"]
    # No bulk delete (ReadOnlyAdmin); deleting a tenant still cascades to its entries.


class PlainNamesUserChangeForm(UserChangeForm):
    """Members see each other's names (and the audit log shows them): plain text only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("first_name", "last_name"):
            if name in self.fields:
                self.fields[name].validators.append(validate_plain_text)


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = PlainNamesUserChangeForm
