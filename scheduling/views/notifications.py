"""The bell: a member's notifications in a tenant, mark one or all read."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from scheduling.models import Notification
from scheduling.notifications import bell_context
from tenants.access import SEE, Granted, get_for_member, get_tenant_for_member
from tenants.models import Tenant
from tenants.pages import AuthedRequest, ListFilterForm, back_to, listing_template, tenant_page, window

NOTIFICATIONS_PER_PAGE = 30
# The nav sections a bell may be drawn on (its aria-current on the notifications page).
SECTIONS = {"schedules", "runs", "sources", "settings", "audit", "notifications"}


def _mine(request: AuthedRequest, tenant: Tenant) -> QuerySet[Notification]:
    # Along scheduling_notif_user_time; only the user's own.
    return (
        Notification.objects.filter(user=request.user, tenant=tenant)
        .select_related("run")
        .only("code", "kind", "title", "message", "created_at", "read_at", "run__code")
        .order_by("-created_at", "-id")
    )


@require_GET
@vary_on_headers("HX-Request")
@login_required
def notification_list(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, SEE)
    form = ListFilterForm(request.GET)
    page = window(_mine(request, tenant), form.value("page") or 1, NOTIFICATIONS_PER_PAGE)
    ctx = tenant_page(request, tenant, role, "notifications", page=page, **bell_context(request.user, tenant))
    return render(request, listing_template(request, "notifications/list.html", "items"), ctx)


@require_GET
@vary_on_headers("HX-Request")
@login_required
def notification_bell(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    """The bell again, polled by every page: a failure that happens while a page stays open
    shows up in its count without a reload. One COUNT query."""
    tenant = get_tenant_for_member(request.user, tenant_code, SEE).obj
    if not request.htmx:  # a plain request wants what the bell links to
        return redirect("notifications", tenant.code)
    section = request.GET.get("section", "")
    ctx = {"tenant": tenant, "section": section if section in SECTIONS else "", **bell_context(request.user, tenant)}
    return render(request, "notifications/bell.html", ctx)


def _my_notification(request: AuthedRequest, code: UUID) -> Granted[Notification]:
    granted = get_for_member(request.user, Notification, code, SEE)
    if granted.obj.user_id != request.user.pk:
        raise Http404  # another member's: as if it did not exist
    return granted


@require_GET
@login_required
def notification_detail(request: AuthedRequest, code: UUID) -> HttpResponse:
    """One notification in full: what the list's short title stands for, and where to go.
    Opening it is reading it (compare-and-swap: the first read time stays)."""
    note, role = _my_notification(request, code)
    if note.read_at is None:
        Notification.objects.filter(pk=note.pk, read_at__isnull=True).update(read_at=timezone.now())
        note.read_at = timezone.now()
    run = note.run if note.run_id else None
    ctx = tenant_page(request, note.tenant, role, "notifications", note=note, run=run)
    return render(request, "notifications/detail.html", ctx)


@require_POST
@login_required
def notification_read(request: AuthedRequest, code: UUID) -> HttpResponse:
    note = _my_notification(request, code).obj
    # Compare-and-swap: a second press keeps the first read time.
    Notification.objects.filter(pk=note.pk, read_at__isnull=True).update(read_at=timezone.now())
    if request.htmx:
        note.refresh_from_db(fields=["read_at"])
        ctx = {
            "note": note,
            "tenant": note.tenant,
            **bell_context(request.user, note.tenant),
            "oob": True,
        }
        return render(request, "notifications/read.html", ctx)
    return redirect(back_to(request, reverse("notifications", args=[note.tenant.code])))


@require_POST
@login_required
def notification_read_all(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, SEE)
    marked = Notification.objects.filter(user=request.user, tenant=tenant, read_at__isnull=True).update(
        read_at=timezone.now()
    )
    messages.success(request, f"Marked {marked} notification{'' if marked == 1 else 's'} read.")
    if request.htmx:
        # The list again, the bell without a count, and the message as a toast.
        ctx = tenant_page(request, tenant, role, "notifications", **bell_context(request.user, tenant))
        ctx["page"] = window(_mine(request, tenant), 1, NOTIFICATIONS_PER_PAGE)
        ctx["oob"] = True
        return render(request, "notifications/read_all.html", ctx)
    return redirect(back_to(request, reverse("notifications", args=[tenant.code])))
