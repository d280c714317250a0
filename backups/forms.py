from __future__ import annotations

from typing import Any

from django import forms

from backups.errors import BackupError
from backups.models import BackupSource
from backups.paths import check_source_path
from tenants.models import Tenant


class SourceForm(forms.ModelForm):
    class Meta:
        model = BackupSource
        fields = ["name", "kind", "path"]
        labels = {"path": "Path of the SQLite file"}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        clash = BackupSource.objects.filter(tenant=self.tenant, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("Another source of this tenant already has this name.")
        return name

    def clean_path(self) -> str:
        # The engine checks again before every backup; checking here says so at once.
        try:
            return str(check_source_path(self.cleaned_data["path"].strip(), self.tenant))
        except BackupError as exc:
            raise forms.ValidationError(exc.message) from None
