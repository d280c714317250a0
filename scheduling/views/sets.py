"""Backup-set actions: pin, unpin and delete (manager), verify (operator), restore (owner).

Verify and restore are runs like a backup (scheduling.operations queues them), so the
buttons here only ask for one and send the user to its run page; the work happens in
the cluster, never in the request. The services check roles again and refuse what
they must (a deleted set, an unconfirmed overwrite): their message is shown as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from backups.deletion import SetDeleteRefused
from backups.engines.base import DumpTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError
from backups.models import BackupItem, BackupSet, ItemStatus
from backups.retention import PinRefused
from lib.wallclock import MINUTES, wall_text
from scheduling.deletion import delete_set
from scheduling.models import BackupSchedule, run_of
from scheduling.operations import OperationRefused, request_restore, request_verify, target_named
from scheduling.retention import set_pinned
from scheduling.views.common import set_rows, toast
from tenants.access import ADMINISTER, MANAGE, RUN, get_for_member, role_allows
from tenants.pages import AuthedRequest, tenant_page
from tenants.validators import validate_path


def set_named(backup_set: BackupSet) -> str:
    """A set as a message names it, on the viewer's clock (str() is UTC: audit labels keep it)."""
    return f"Backup set {wall_text(backup_set.created_at, timezone.get_current_timezone_name(), MINUTES)}"


def _schedule_of(backup_set: BackupSet) -> BackupSchedule | None:
    made_by = run_of(backup_set)
    return made_by.schedule if made_by is not None else None


def _back_to_schedule(backup_set: BackupSet) -> HttpResponse:
    schedule = _schedule_of(backup_set)
    if schedule is None:  # the schedule was deleted: its tenant's list
        return redirect("schedules", tenant_code=backup_set.tenant.code)
    return redirect(reverse("schedule_detail", args=[schedule.code]) + "#sets-heading")


def _pin(request: AuthedRequest, code: UUID, pinned: bool) -> HttpResponse:
    backup_set, role = get_for_member(request.user, BackupSet, code, MANAGE)
    try:
        changed = set_pinned(backup_set, pinned, request.user)
    except PinRefused as exc:
        messages.error(request, str(exc))
    else:
        state = "pinned: retention keeps it" if pinned else "unpinned: retention decides after the next backup"
        messages.success(
            request, f"{set_named(backup_set)} is {state}." if changed else f"{set_named(backup_set)} already was."
        )
    return _answer_row(request, backup_set, role)


def _answer_row(request: AuthedRequest, backup_set: BackupSet, role: str) -> HttpResponse:
    """htmx: the table's row in its new state (nothing if the set is gone), with the toast;
    otherwise back to the schedule's page."""
    if request.htmx and run_of(backup_set) is not None:
        return toast(request, _row(request, backup_set, role))
    return _back_to_schedule(backup_set)


def _row(request: AuthedRequest, backup_set: BackupSet, role: str) -> str:
    (row,) = set_rows(BackupSet.objects.select_related("run__schedule").filter(pk=backup_set.pk))
    if row.backup_set.deleted_at is not None:  # gone from the table: the row goes too
        return ""
    ctx = tenant_page(
        request,
        backup_set.tenant,
        role,
        "schedules",
        row=row,
        schedule=_schedule_of(row.backup_set),
        can_restore=role_allows(role, ADMINISTER),
    )
    return render_to_string("scheduling/schedule_detail.html#setrow", ctx, request=request)


@require_POST
@login_required
def set_pin(request: AuthedRequest, code: UUID) -> HttpResponse:
    return _pin(request, code, True)


@require_POST
@login_required
def set_unpin(request: AuthedRequest, code: UUID) -> HttpResponse:
    return _pin(request, code, False)


@require_POST
@login_required
def set_delete(request: AuthedRequest, code: UUID) -> HttpResponse:
    """Delete one unpinned set and its files (manager); the row goes from the table."""
    backup_set, role = get_for_member(request.user, BackupSet, code, MANAGE)
    try:
        delete_set(backup_set, request.user)
    except SetDeleteRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{set_named(backup_set)} deleted, with its files.")
    return _answer_row(request, backup_set, role)


@require_POST
@login_required
def set_verify(request: AuthedRequest, code: UUID) -> HttpResponse:
    backup_set = get_for_member(request.user, BackupSet, code, RUN).obj
    try:
        run = request_verify(backup_set, request.user)
    except OperationRefused as exc:
        messages.error(request, str(exc))
        return _back_to_schedule(backup_set)
    messages.success(request, f"Verification of {set_named(backup_set)} queued.")
    return redirect("run_detail", code=run.code)


class RestoreForm(forms.Form):
    target = forms.CharField(
        max_length=1000,
        required=False,
        label="Restore into",
        help_text="Blank: the new target shown above. A database name for a database server, "
        "else a path (relative to the source's folder, inside the tenant's roots).",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
        validators=[validate_path],
    )
    overwrite = forms.BooleanField(required=False, label="Overwrite it if it exists")
    confirm = forms.CharField(
        max_length=1000,
        required=False,
        label="To overwrite, type the target's exact name",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("overwrite") and not data.get("target", "").strip():
            raise forms.ValidationError("Name the target to overwrite; the default target is always a new one.")
        return data


@dataclass(frozen=True)
class Planned:
    item: BackupItem
    default: str  # the new target a restore writes to when none is typed, or "" if none
    problem: str  # why this item cannot be restored, or ""


def _planned(item: BackupItem, stamp: str) -> Planned:
    """What a restore of `item` writes to by default (the engine says), for the page."""
    if item.source is None:
        return Planned(item, "", "Its source was deleted; a restore needs its connection details.")
    try:
        engine = engine_for(item.kind)
        target = engine.default_restore_target(item.source, DumpTarget(label=item.label, database=item.database), stamp)
    except NotImplementedError:
        return Planned(item, "", "Sources of this kind cannot be restored by this server.")
    except BackupError as exc:
        return Planned(item, "", exc.message)
    return Planned(item, target.database or target.path, "")


@require_http_methods(["GET", "POST"])
@login_required
def set_restore(request: AuthedRequest, code: UUID, item_code: UUID | None = None) -> HttpResponse:
    """Restore the whole set (each item to its new default target) or one item, to its
    default target or one the owner names."""
    backup_set, role = get_for_member(request.user, BackupSet, code, ADMINISTER)
    stored = list(backup_set.items.filter(status=ItemStatus.OK).select_related("source").order_by("id"))
    item = None
    if item_code is not None:
        item = next((each for each in stored if each.code == item_code), None)
        if item is None:  # not an item of this set, or one that stored nothing
            raise Http404
    elif len(stored) == 1:
        item = stored[0]
    form = RestoreForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        name = form.cleaned_data["target"].strip()
        if name and item is None:
            form.add_error("target", "This set holds several items: choose one below to restore it elsewhere.")
        else:
            target = target_named(item, name, form.cleaned_data["overwrite"]) if item and name else None
            try:
                run = request_restore(
                    backup_set, request.user, item=item, target=target, confirm=form.cleaned_data["confirm"].strip()
                )
            except OperationRefused as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Restore of {set_named(backup_set)} queued.")
                return redirect("run_detail", code=run.code)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    ctx = tenant_page(
        request,
        backup_set.tenant,
        role,
        "schedules",
        backup_set=backup_set,
        schedule=_schedule_of(backup_set),
        item=item,
        planned=[_planned(each, stamp) for each in ([item] if item else stored)],
        several=len(stored) > 1,
        form=form,
    )
    return render(request, "backups/set_restore.html", ctx)
