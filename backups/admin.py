"""Sets, items and connection checks. The source admin is scheduling's: a source may not move to
another tenant while schedules use it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from backups.models import BackupItem, BackupSet, SourceCheck
from tenants.admin_readonly import ReadOnlyAdmin


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
