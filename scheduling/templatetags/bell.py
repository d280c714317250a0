"""The header's bell on every tenant page (base.html): `{% load bell %}{% bell %}`.

Drawn here rather than put in every page's context by tenants.pages.tenant_page, which
knows tenants only. A page that counted already (the notifications list) is not counted twice.
"""

from __future__ import annotations

from typing import Any

from django import template

from scheduling.notifications import bell_context

register = template.Library()


@register.inclusion_tag("notifications/bell.html", takes_context=True)
def bell(context: template.Context) -> dict[str, Any]:
    tenant = context["tenant"]
    if "unread" in context:
        counts = {name: context[name] for name in ("unread", "unread_cap", "bell_poll_seconds")}
    else:
        counts = bell_context(context["user"], tenant)
    return {"tenant": tenant, "section": context.get("section", ""), **counts}
