from __future__ import annotations

from typing import Any

from django import forms

from backups.models import BackupSource
from scheduling.models import EDITABLE_FIELDS, BackupSchedule
from tenants.models import Tenant

WEEKDAY_CHOICES = [(0, "Mon"), (1, "Tue"), (2, "Wed"), (3, "Thu"), (4, "Fri"), (5, "Sat"), (6, "Sun")]


class ScheduleForm(forms.ModelForm):
    weekdays = forms.TypedMultipleChoiceField(
        choices=WEEKDAY_CHOICES, coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    time_of_day = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"))
    timezone = forms.CharField(max_length=64, initial="UTC", help_text="IANA name, e.g. Europe/Berlin")

    class Meta:
        model = BackupSchedule
        fields = list(EDITABLE_FIELDS)
        widgets = {"sources": forms.CheckboxSelectMultiple}
        labels = {"kind": "Strategy", "every_hours": "Every N hours", "keep_last": "Keep last N backups"}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        # Only this tenant's sources: another tenant's is "not one of the available choices".
        self.fields["sources"].queryset = BackupSource.objects.filter(tenant=tenant)  # type: ignore[attr-defined]
        self.fields["sources"].help_text = "One backup set per run holds one item per source."
        self.fields["every_hours"].widget.attrs.update(min=1, max=168)
        self.fields["keep_last"].widget.attrs.update(min=1)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        clash = BackupSchedule.objects.filter(tenant=self.tenant, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("Another schedule of this tenant already has this name.")
        return name
