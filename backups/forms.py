from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django import forms

from backups.engines.base import Engine
from backups.engines.registry import engines, find_engine
from backups.errors import BackupError
from backups.hosts import checked_addresses, rules_for
from backups.models import BackupSource, TlsMode
from backups.paths import allowed_roots, check_source_path
from tenants.models import Tenant
from tenants.validators import validate_path

# A host name or an IPv4/IPv6 address; never something a client tool could read as an option.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,253}[A-Za-z0-9])?|\[?[0-9A-Fa-f:.]+\]?)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SERVER_FIELDS = ("host", "port", "database", "all_databases", "username", "password", "clear_password", "tls_mode")
FILE_FIELDS = ("path",)
# TLS modes from weakest to strongest: a weaker one exposes the password on the way.
_TLS_RANK = {TlsMode.DISABLE: 0, TlsMode.PREFER: 1, TlsMode.REQUIRE: 2, TlsMode.VERIFY_FULL: 3}
NEW_ENDPOINT = (
    "Enter the password again, or tick “Clear the stored password”: it would be sent to a"
    " different server (the kind, host, port or user changed, or TLS got weaker)."
)


@dataclass(frozen=True)
class FieldGroup:
    """The fields of the server kinds or of the file kinds, for the template."""

    kinds: str  # "postgres mysql": static/js/sources.js shows the group while one of them is chosen
    names: str  # its heading's "(PostgreSQL, MariaDB / MySQL)"
    fields: list[forms.BoundField]


def _servers() -> list[Engine]:
    return [engine for engine in engines() if engine.is_server]


def _file_kinds() -> list[Engine]:
    return [engine for engine in engines() if not engine.is_server]


class SourceForm(forms.ModelForm):
    # Write-only: never rendered back (render_value=False); blank on edit keeps the stored one.
    password = forms.CharField(
        required=False,
        strip=False,
        max_length=1000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; never shown again.",
    )
    clear_password = forms.BooleanField(required=False, label="Clear the stored password")

    class Meta:
        model = BackupSource
        fields = ["name", "kind", "path", "host", "port", "database", "all_databases", "username", "tls_mode"]
        labels = {"all_databases": "All databases", "tls_mode": "TLS", "username": "User name"}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        # Said after saving (messages): what is saved but will not work yet.
        self.warnings: list[str] = []
        for name in ("path", "tls_mode"):  # each required for its own kinds only, in clean()
            self.fields[name].required = False
        roots = allowed_roots(tenant)
        self.fields["path"].help_text = (
            f"An absolute path inside this tenant's folders: {', '.join(map(str, roots))}."
            if roots
            else "This tenant has no folders yet; an administrator sets them."
        )
        self.fields["host"].help_text = f"This tenant's sources may use: {', '.join(rules_for(tenant))}."
        if self.instance.has_password:
            self.fields["password"].help_text = "A password is stored. Leave blank to keep it; it is never shown."
        else:
            del self.fields["clear_password"]
        self._describe_kinds()

    def _describe_kinds(self) -> None:
        """Labels and help that name the kinds, from their engines."""
        self.fields["path"].label = f"Path of the {' or '.join(engine.path_noun for engine in _file_kinds())}"
        ports = ", ".join(f"{engine.default_port} for {engine.label}" for engine in _servers() if engine.default_port)
        self.fields["port"].help_text = f"Blank: {ports}." if ports else ""
        for engine in engines():
            for name, hint in engine.form_hints.items():
                if name in self.fields:
                    self.fields[name].help_text = " ".join(filter(None, [str(self.fields[name].help_text), hint]))

    def server_group(self) -> FieldGroup:
        servers = _servers()
        fields = [self[name] for name in SERVER_FIELDS if name in self.fields]
        return FieldGroup(" ".join(e.kind for e in servers), ", ".join(e.label for e in servers), fields)

    def file_group(self) -> FieldGroup:
        files = _file_kinds()
        fields = [self[name] for name in FILE_FIELDS]
        return FieldGroup(" ".join(e.kind for e in files), ", ".join(e.path_noun for e in files), fields)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        clash = BackupSource.objects.filter(tenant=self.tenant, name=name).exclude(pk=self.instance.pk)
        if clash.exists():
            raise forms.ValidationError("Another source of this tenant already has this name.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        engine = find_engine(data.get("kind") or "")  # no kind: the field has its error
        if engine is not None and engine.is_server:
            self._clean_server(data, engine)
        elif engine is not None:
            self._clean_file(data, engine)
        return data

    def _clean_server(self, data: dict[str, Any], engine: Engine) -> None:
        port = data.get("port")
        if port is None:
            data["port"] = engine.default_port
        elif not 1 <= port <= 65535:
            self.add_error("port", "A port is a number from 1 to 65535.")
        host = (data.get("host") or "").strip()
        if not host:
            self.add_error("host", "Enter the database server's host name or address.")
        elif not _HOST.match(host):
            self.add_error("host", "Enter a host name (letters, digits, dots, hyphens) or an IP address.")
        else:
            # The engines check again before every connection (the name may resolve elsewhere by then).
            try:
                checked_addresses(host, engine.default_port or 0, self.tenant)
            except BackupError as exc:
                self.add_error("host", exc.message)
        data["host"] = host
        username = (data.get("username") or "").strip()
        if not username:
            self.add_error("username", "Enter the user name the backup connects as.")
        elif _CONTROL.search(username) or len(username) > 255:
            self.add_error("username", "The user name cannot contain control characters.")
        data["username"] = username
        database = (data.get("database") or "").strip()
        limit = engine.max_database_name
        if data.get("all_databases"):
            database = ""  # discovered at run time
        elif not database:
            self.add_error("database", "Enter the database to back up, or tick “All databases”.")
        elif _CONTROL.search(database) or engine.database_name_length(database) > limit:
            self.add_error("database", f"A database name has at most {limit} characters and no control characters.")
        data["database"] = database
        if data.get("password") and data.get("clear_password"):
            self.add_error("password", "Either type a new password or clear the stored one, not both.")
        if _CONTROL.search(data.get("password") or ""):
            self.add_error("password", "The password cannot contain control characters (such as a line break).")
        data["tls_mode"] = data.get("tls_mode") or TlsMode.PREFER
        data["path"] = ""
        if not data.get("password") and not data.get("clear_password") and self._endpoint_changed(data, engine):
            self.add_error("password", NEW_ENDPOINT)

    def _endpoint_changed(self, data: dict[str, Any], engine: Engine) -> bool:
        """Whether the stored password would now go somewhere it did not go before.

        A manager must not be able to send a password they cannot read to a server of
        their choosing. The database is not part of it: on the same server, with the
        same user, the password reaches the same listener."""
        stored = self.instance  # as loaded: the form copies the new values onto it only after clean()
        if stored.pk is None or not stored.has_password:
            return False
        stored_engine = find_engine(stored.kind)
        stored_port = stored.port or (stored_engine.default_port if stored_engine else None)
        before = (stored.kind, stored.host, stored_port, stored.username)
        # .get(): a field with an error is no longer in the cleaned data.
        after = (engine.kind, data.get("host"), data.get("port"), data.get("username"))
        weaker = _TLS_RANK.get(data.get("tls_mode", ""), 0) < _TLS_RANK.get(stored.tls_mode, 0)
        return before != after or weaker

    def _clean_file(self, data: dict[str, Any], engine: Engine) -> None:
        # The engine checks again before every backup; checking here says so at once.
        try:
            validate_path((data.get("path") or "").strip())  # before any system call could choke on it
            path = check_source_path((data.get("path") or "").strip(), self.tenant)
        except forms.ValidationError as exc:
            self.add_error("path", exc)
        except BackupError as exc:
            self.add_error("path", exc.message)  # the only error: the model skips a field with one
        else:
            data["path"] = str(path)
            folder = engine.path_is_folder
            if not path.exists():
                self.warnings.append(f"{path} does not exist (yet): its backups will fail until it does.")
            elif folder and not path.is_dir():
                self.add_error("path", _wrong_kind("This is a file, not a folder", folders=False))
            elif not folder and path.is_dir():
                self.add_error("path", _wrong_kind("This is a folder, not a file", folders=True))
        data.update(host="", port=None, database="", all_databases=False, username="", password="")
        data["tls_mode"] = self.instance.tls_mode or TlsMode.PREFER
        data["clear_password"] = True

    def save(self, commit: bool = True) -> BackupSource:
        source: BackupSource = super().save(commit=False)
        if self.cleaned_data.get("clear_password"):
            if source.has_password:
                source.set_password("")
        elif self.cleaned_data.get("password"):
            source.set_password(self.cleaned_data["password"])
        if commit:
            source.save()
        return source


def _wrong_kind(what: str, *, folders: bool) -> str:
    """`what`, and the file kinds whose path is a folder (or a file) as `folders` says."""
    fitting = " or ".join(f"“{e.label}”" for e in _file_kinds() if e.path_is_folder == folders)
    return f"{what}: choose the kind {fitting}." if fitting else f"{what}."
