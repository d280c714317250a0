from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import capfirst

from backups.models import BackupSet
from scheduling.models import (
    EDITABLE_FIELDS,
    BackupSchedule,
    BackupScheduleRun,
    DispatcherBeat,
    Notification,
    ScheduleSource,
    SourceLease,
)
from scheduling.services import delete_schedule, save_schedule, snapshot
from tenants.admin_readonly import ReadOnlyAdmin


class BackupScheduleForm(forms.ModelForm):
    class Meta:
        model = BackupSchedule
        # Sources are edited in the inline (through model).
        fields = ["tenant", *(f for f in EDITABLE_FIELDS if f != "sources")]


class ScheduleSourceFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        tenant_id = getattr(self.instance, "tenant_id", None)
        for form in self.forms:
            source = form.cleaned_data.get("source") if hasattr(form, "cleaned_data") else None
            if source is not None and tenant_id is not None and source.tenant_id != tenant_id:
                raise forms.ValidationError("This source belongs to another tenant.")


class ScheduleSourceInline(admin.TabularInline):
    model = ScheduleSource
    formset = ScheduleSourceFormSet
    extra = 1
    raw_id_fields = ["source"]
    verbose_name = "source"


@admin.register(BackupSchedule)
class BackupScheduleAdmin(admin.ModelAdmin):
    form = BackupScheduleForm
    list_display = ["name", "tenant", "kind", "enabled", "next_run_at", "last_run_at", "last_status"]
    list_filter = ["kind", "enabled", "last_status", "tenant"]
    search_fields = ["name", "=code", "tenant__name", "sources__name"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    inlines = [ScheduleSourceInline]
    readonly_fields = ["code", "anchor_at", "next_run_at", "last_run_at", "last_status", "created_at", "updated_at"]

    def save_model(self, request: HttpRequest, obj: BackupSchedule, form: Any, change: bool) -> None:
        # Through the service, like the tenant pages: next_run_at, the anchor and the audit entry.
        before = snapshot(BackupSchedule.objects.get(pk=obj.pk)) if change else None
        save_schedule(obj, before, request.user)

    def get_deleted_objects(
        self, objs: Sequence[BackupSchedule] | QuerySet[BackupSchedule], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        # The sets its runs made keep a schedule (delete_schedule refuses it): the admin
        # shows them as protected and deletes nothing, as it would for a PROTECT.
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        sets = BackupSet.objects.filter(run__schedule__in=[each.pk for each in objs]).order_by("-created_at", "-id")
        name = capfirst(BackupSet._meta.verbose_name)
        return deleted, counts, perms_needed, [*protected, *(f"{name}: {each}" for each in sets)]

    def delete_model(self, request: HttpRequest, obj: BackupSchedule) -> None:
        delete_schedule(obj, request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BackupSchedule]) -> None:
        for schedule in queryset.select_related("tenant"):
            delete_schedule(schedule, request.user)


@admin.register(BackupScheduleRun)
class BackupScheduleRunAdmin(ReadOnlyAdmin):
    """Read-only: runs change state only by compare-and-swap in the dispatcher and the worker."""

    list_display = [
        "code",
        "schedule",
        "tenant",
        "operation",
        "trigger",
        "status",
        "attempt",
        "slot",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "operation", "trigger", "tenant"]

    def has_delete_permission(self, request: HttpRequest, obj: BackupScheduleRun | None = None) -> bool:
        # A run that made a set stays while the set does: the set is found through it (its
        # schedule, retention, the pages). Deleting the schedule takes both, sets first.
        return obj is None or obj.backup_set_id is None
    search_fields = ["=code", "schedule__name", "error_code", "error_message"]
    list_select_related = ["schedule", "tenant"]


@admin.register(SourceLease)
class SourceLeaseAdmin(ReadOnlyAdmin):
    """Read-only: which run holds which source now. Leases are taken and released by runs."""

    list_display = ["source", "run", "acquired_at"]
    list_select_related = ["source", "run__schedule"]


@admin.register(DispatcherBeat)
class DispatcherBeatAdmin(ReadOnlyAdmin):
    """Read-only: when and where the last dispatcher pass ran (written by every pass)."""

    list_display = ["at", "node"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Read-only: notifications are made by the code paths they report on."""

    list_display = ["created_at", "tenant", "user", "kind", "message", "read_at"]
    list_filter = ["kind", ("read_at", admin.EmptyFieldListFilter), "tenant"]
    search_fields = ["message", "user__username", "=code"]
    list_select_related = ["tenant", "user"]
