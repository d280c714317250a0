from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from backups.engines.registry import find_engine
from backups.errors import BackupError
from backups.hosts import checked_addresses
from backups.models import BackupItem, BackupSet, BackupSource, SourceCheck
from backups.paths import check_source_path
from tenants.admin_readonly import ReadOnlyAdmin
from tenants.audit import record
from tenants.models import AuditAction


class BackupSourceForm(forms.ModelForm):
    class Meta:
        model = BackupSource
        fields = ["tenant", "name", "kind", "path"]

    def clean(self) -> dict[str, Any]:
        # The same rules as the tenant pages: paths under the tenant's file roots, servers
        # among its allowed hosts.
        cleaned = super().clean() or {}
        tenant, path = cleaned.get("tenant"), (cleaned.get("path") or "").strip()
        engine = find_engine(cleaned.get("kind") or "")
        if tenant is not None and not (engine is not None and engine.is_server):
            try:
                cleaned["path"] = str(check_source_path(path, tenant))
            except BackupError as exc:
                self.add_error("path", exc.message)
        elif tenant is not None and self.instance.host:
            try:
                checked_addresses(self.instance.host, self.instance.port or 0, tenant)
            except BackupError as exc:
                self.add_error("tenant", exc.message)
        if tenant is not None and self.instance.pk and tenant.pk != self.instance.tenant_id:
            self._refuse_move_in_use()
        return cleaned

    def _refuse_move_in_use(self) -> None:
        """A source moved to another tenant while the first tenant's schedules still back
        it up would have that tenant's runs read the other tenant's data (or fail)."""
        names = list(self.instance.schedules.order_by("name").values_list("name", flat=True))
        if names:
            self.add_error(
                "tenant",
                f"This source cannot move to another tenant: schedules of {self.instance.tenant} use it"
                f" ({', '.join(names)}). Remove it from them first.",
            )


@admin.register(BackupSource)
class BackupSourceAdmin(admin.ModelAdmin):
    form = BackupSourceForm
    list_display = ["name", "tenant", "kind", "path", "created_at"]
    list_filter = ["kind", "tenant"]
    search_fields = ["name", "path", "=code", "tenant__name"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    readonly_fields = ["code", "created_at"]

    def save_model(self, request: HttpRequest, obj: BackupSource, form: Any, change: bool) -> None:
        if change and "kind" in form.changed_data and obj.has_password:
            # Another kind sends it elsewhere (another protocol, another port); the tenant enters it again.
            obj.set_password("")
        super().save_model(request, obj, form, change)
        action = AuditAction.SOURCE_UPDATED if change else AuditAction.SOURCE_CREATED
        record(obj.tenant, action, obj, actor=request.user, kind=obj.kind, path=obj.path)

    def delete_model(self, request: HttpRequest, obj: BackupSource) -> None:
        record(obj.tenant, AuditAction.SOURCE_DELETED, obj, actor=request.user, kind=obj.kind, path=obj.path)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BackupSource]) -> None:
        for source in queryset.select_related("tenant"):
            self.delete_model(request, source)


class BackupItemInline(admin.TabularInline):
    model = BackupItem
    extra = 0
    can_delete = False
    fields = ("label", "status", "size", "sha256", "storage_key", "error_code", "error_message")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BackupSet)
class BackupSetAdmin(ReadOnlyAdmin):
    """Read-only: a set is immutable, and retention alone marks it deleted and removes its files."""

    list_display = [
        "code",
        "tenant",
        "status",
        "size",
        "pinned",
        "verify_status",
        "created_at",
        "deleted_at",
    ]
    list_filter = ["status", "pinned", ("deleted_at", admin.EmptyFieldListFilter), "tenant"]
    # Its schedule is its run's (scheduling's run admin lists the set each run made).
    search_fields = ["=code", "items__sha256", "items__storage_key"]
    list_select_related = ["tenant"]
    inlines = [BackupItemInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting the row would orphan the stored file; retention does it properly.
        return False


@admin.register(SourceCheck)
class SourceCheckAdmin(ReadOnlyAdmin):
    """Read-only: "Test connection" results, made by the workers."""

    list_display = ["source", "tenant", "status", "ok", "error_code", "requested_by", "created_at", "finished_at"]
    list_filter = ["status", "ok", "tenant"]
    search_fields = ["=code", "source__name"]
    list_select_related = ["source", "tenant", "requested_by"]
