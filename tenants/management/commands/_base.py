"""Shared bits for tenant-scoped commands: acting as a user, through the access module."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import CommandError


def acting_user(username: str) -> User:
    # No user name holds a NUL, and PostgreSQL refuses one in a query with a traceback.
    user = None if "\x00" in username else User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"No active user {username!r}.", returncode=2)
    return user
