from __future__ import annotations

from typing import Any

from django import forms
from django.utils.html import format_html

from backups.models import BackupSource
from scheduling.models import EDITABLE_FIELDS, BackupSchedule, ScheduleKind
from tenants.models import Tenant

WEEKDAY_CHOICES = [(0, "Mon"), (1, "Tue"), (2, "Wed"), (3, "Thu"), (4, "Fri"), (5, "Sat"), (6, "Sun")]

# Which strategy uses which timing field. The form shows only these (without
# JavaScript it shows all, each with a hint naming the strategies that use it).
FIELDS_BY_KIND: dict[str, frozenset[str]] = {
    "time_of_day": frozenset({ScheduleKind.DAILY, ScheduleKind.WEEKLY, ScheduleKind.EVERY_N_HOURS}),
    "weekdays": frozenset({ScheduleKind.WEEKLY}),
    "cron": frozenset({ScheduleKind.CRON}),
    "every_hours": frozenset({ScheduleKind.EVERY_N_HOURS}),
    "timezone": frozenset(ScheduleKind),
}
TIMING_FIELDS = ("kind", *FIELDS_BY_KIND)
# field -> (which strategies use it, what to type). The first part matters only when
# every field shows (no JavaScript): with scripts a field shows only for the strategies
# that use it, and "Weekly only." under a field shown only for weekly is noise, so
# schedules.css hides it (.strategy-hint) once schedules.js runs.
TIMING_HINTS: dict[str, tuple[str, str]] = {
    "time_of_day": ("Daily, Weekly and Every N hours.", "24-hour HH:MM; Every N hours counts from it."),
    "weekdays": ("Weekly only.", ""),
    "cron": ("Cron expression only.", "minute hour day-of-month month day-of-week, e.g. 30 2 * * 1-5."),
    "every_hours": ("Every N hours only.", "1 to 168."),
    "timezone": ("", "IANA name, e.g. Europe/Berlin."),
}


def timing_hint(name: str) -> str:
    uses, what = TIMING_HINTS[name]
    if not uses:
        return what
    return format_html('<span class="strategy-hint">{}</span>{}', uses, f" {what}" if what else "")


# <input type="time"> shows the browser's locale (02:00 AM in en-US); the app speaks 24-hour
# times everywhere, so a text input that takes and shows HH:MM.
TIME_PATTERN = "([01]?[0-9]|2[0-3]):[0-5][0-9]"


def time_of_day_field() -> forms.TimeField:
    return forms.TimeField(
        input_formats=["%H:%M", "%H:%M:%S"],
        error_messages={"invalid": "Enter a 24-hour time as HH:MM, e.g. 02:30 or 14:00."},
        widget=forms.TimeInput(
            format="%H:%M",
            attrs={
                "pattern": TIME_PATTERN,
                "inputmode": "numeric",
                "placeholder": "HH:MM",
                "maxlength": 8,
                "size": 5,
                "autocomplete": "off",
                "spellcheck": "false",
            },
        ),
    )


def needed_fields(kind: str) -> frozenset[str]:
    return frozenset(name for name, kinds in FIELDS_BY_KIND.items() if kind in kinds)


class TimingFieldsMixin(forms.BaseForm):
    """The timing fields' widgets and hints, shared by the full form and a settings block."""

    def setup_timing(self) -> None:
        for name in TIMING_HINTS:
            if name in self.fields:
                self.fields[name].help_text = timing_hint(name)
        if "every_hours" in self.fields:
            self.fields["every_hours"].widget.attrs.update(min=1, max=168)
        # A searchable zone list: <input list> plus one <datalist id="tz-names"> on the page.
        self.fields["timezone"].widget.attrs.update(list="tz-names", autocomplete="off", spellcheck="false")

    @property
    def timing_id(self) -> str:
        """The id of the element holding the timing fields (one per form on a page)."""
        return f"timing-{self.prefix or 'fields'}"

    def swap_fields_on_change(self, url: str) -> None:
        """With htmx, a change of strategy fetches the fields it needs from `url`."""
        self.fields["kind"].widget.attrs.update(
            {
                "hx-post": url,
                "hx-trigger": "change",
                "hx-target": f"#{self.timing_id}",
                "hx-swap": "outerHTML",
                "hx-include": "closest form",
            }
        )

    def kind_value(self) -> str:
        value = self["kind"].value()
        return value if value in ScheduleKind.values else ScheduleKind.DAILY

    def timing_fields(self) -> list[tuple[forms.BoundField, bool]]:
        """Each timing field and whether the chosen strategy needs it (a field with an error always shows)."""
        needed = needed_fields(self.kind_value())
        bound = [self[name] for name in FIELDS_BY_KIND if name in self.fields]
        return [(field, field.name in needed or bool(field.errors)) for field in bound]


class ScheduleForm(TimingFieldsMixin, forms.ModelForm):
    weekdays = forms.TypedMultipleChoiceField(
        choices=WEEKDAY_CHOICES, coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    time_of_day = time_of_day_field()
    timezone = forms.CharField(max_length=64, initial="UTC", label="Time zone")

    class Meta:
        model = BackupSchedule
        fields = list(EDITABLE_FIELDS)
        widgets = {"sources": forms.CheckboxSelectMultiple}
        labels = {
            "kind": "Strategy",
            "every_hours": "Every N hours",
            "keep_last": "Keep last N backups",
            "keep_daily": "Keep daily (days)",
            "keep_weekly": "Keep weekly (weeks)",
            "keep_monthly": "Keep monthly (months)",
            "keep_yearly": "Keep yearly (years)",
            "time_limit_minutes": "Time limit (minutes)",
        }

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        # Only this tenant's sources: another tenant's is "not one of the available choices".
        sources = self.fields["sources"]
        assert isinstance(sources, forms.ModelMultipleChoiceField)
        sources.queryset = BackupSource.objects.filter(tenant=tenant)
        # The checkboxes carry public codes: database ids would tell a manager how many
        # sources other tenants have.
        sources.to_field_name = "code"
        sources.help_text = "One backup set per run holds one item per source."
        self.fields["keep_last"].widget.attrs.update(min=1)
        for name in ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
            self.fields[name].widget.attrs.update(min=0)
        self.setup_timing()

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        clash = BackupSchedule.objects.filter(tenant=self.tenant, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("Another schedule of this tenant already has this name.")
        return name


class TimingForm(TimingFieldsMixin, forms.ModelForm):
    """A settings-page block: only when a schedule runs. Prefixed by the schedule's code
    so several blocks on one page keep distinct ids."""

    weekdays = forms.TypedMultipleChoiceField(
        choices=WEEKDAY_CHOICES, coerce=int, required=False, widget=forms.CheckboxSelectMultiple
    )
    time_of_day = time_of_day_field()
    timezone = forms.CharField(max_length=64, label="Time zone")

    class Meta:
        model = BackupSchedule
        fields = list(TIMING_FIELDS)
        labels = {"kind": "Strategy", "every_hours": "Every N hours"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setup_timing()


def unbound_copy(form: forms.ModelForm, **kwargs: Any) -> Any:
    """The same form unbound, showing the posted timing values as initial values.

    Used when the strategy changes: the fields for the new strategy appear without
    the errors a half-filled form would have (those show on the preview and on save).
    """
    initial = {name: form[name].data for name in TIMING_FIELDS if name in form.fields}
    return type(form)(initial=initial, **kwargs)


class ConfirmNameForm(forms.Form):
    """A destructive action confirmed by typing the name of what it destroys."""

    confirm = forms.CharField(
        max_length=200,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "autocapitalize": "off"}),
    )

    def __init__(self, *args: Any, name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = name
        self.fields["confirm"].label = f"To confirm, type the schedule's name: {name}"

    def clean_confirm(self) -> str:
        typed = self.cleaned_data["confirm"].strip()
        if typed != self.name:
            raise forms.ValidationError(f"That is not the schedule's name; type “{self.name}” exactly.")
        return typed
