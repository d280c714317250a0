from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import capfirst

from backups.engines.registry import find_engine
from backups.errors import BackupError
from backups.hosts import checked_addresses
from backups.models import BackupSet, BackupSource
from backups.paths import check_source_path
from scheduling.models import (
    EDITABLE_FIELDS,
    BackupSchedule,
    BackupScheduleRun,
    DispatcherBeat,
    NodeClock,
    Notification,
    ScheduleSource,
    SourceLease,
)
from scheduling.services import delete_schedule, save_schedule, snapshot
from scheduling.sources import schedule_names
from tenants.admin_readonly import ReadOnlyAdmin
from tenants.audit import record
from tenants.models import AuditAction


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
        names = schedule_names(self.instance)
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


@admin.register(NodeClock)
class NodeClockAdmin(ReadOnlyAdmin):
    """Read-only: each node's clock against the database's, measured by its dispatcher passes."""

    list_display = ["node", "offset_seconds", "round_trip_seconds", "measured_at"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """Read-only: notifications are made by the code paths they report on."""

    list_display = ["created_at", "tenant", "user", "kind", "message", "read_at"]
    list_filter = ["kind", ("read_at", admin.EmptyFieldListFilter), "tenant"]
    search_fields = ["message", "user__username", "=code"]
    list_select_related = ["tenant", "user"]
