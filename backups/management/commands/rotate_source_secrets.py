"""Re-encrypt every stored source password with the current (first) key of SOURCE_SECRET_KEYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from backups.models import BackupSource
from backups.secrets import SecretError, rotate


class Command(BaseCommand):
    help = "Re-encrypt every source password with the first key of SOURCE_SECRET_KEYS (key rotation)."

    def handle(self, *args: Any, **options: Any) -> None:
        sources = list(
            BackupSource.objects.exclude(password_encrypted="")
            .select_related("tenant")
            .order_by("id")
            .values_list("pk", "name", "tenant__name", "password_encrypted")
        )
        rotated: list[tuple[int, str, str]] = []
        broken: list[str] = []
        # Check every token first: either all are re-encrypted or none is, so the old key
        # is never dropped while one password still needs it.
        for pk, name, tenant_name, token in sources:
            try:
                rotated.append((pk, token, rotate(token)))
            except SecretError:
                broken.append(f"“{name}” ({tenant_name})")
        if broken:
            raise CommandError(
                f"{len(broken)} source password(s) cannot be decrypted with any key in SOURCE_SECRET_KEYS: "
                f"{', '.join(broken)}. Add the key that encrypted them back to SOURCE_SECRET_KEYS, or enter "
                "those passwords again on the source pages. Nothing was changed.",
                returncode=2,
            )
        changed = 0
        with transaction.atomic():
            for pk, old, new in rotated:
                # Compare-and-swap: a password edited meanwhile is already under the current key.
                changed += BackupSource.objects.filter(pk=pk, password_encrypted=old).update(password_encrypted=new)
        without = BackupSource.objects.filter(password_encrypted="").count()
        self.stdout.write(
            f"Re-encrypted {changed} source password(s) with the current key"
            f" ({len(rotated) - changed} changed meanwhile, {without} source(s) without a password)."
        )
