"""Forms of the admin actions."""

from django import forms
from django.conf import settings

from cmdb.jobs import rollout

#: Fields the base forms add, shown after each action's own, in this order.
TRAILING = ("batch", "max_failures", "canary", "confirm")


class ActionForm(forms.Form):
    """What every host action's form has: a box to confirm reaching many hosts, there only once
    the service layer asked for it (NeedsConfirmation) or on the page that had it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A ticked box comes back as "confirm"; an unticked one sends nothing and is asked
        # for again.
        if self.is_bound and self.data.get("confirm"):
            self.ask_to_confirm(None)
        self.order_fields([n for n in self.fields if n not in TRAILING] + list(TRAILING))

    def ask_to_confirm(self, count: int | None) -> None:
        hosts = f"{count} hosts" if count is not None else "this many hosts"
        self.fields["confirm"] = forms.BooleanField(
            required=False, label=f"confirm: reach {hosts}",
            help_text="More hosts than may be reached without confirming: check the selection.",
        )  # fmt: skip

    def confirmed(self) -> bool:
        return self.is_bound and self.is_valid() and self.cleaned_data.get("confirm", False)

    def rolling(self) -> dict:
        """The Targets' keys of a rolling job (RollingForm's); none here."""
        return {}


def _amount(name: str, parser, message: str):
    """A form's clean_<name>: the field's text, checked as the service layer will."""

    def clean(self):
        value = self.cleaned_data[name] or None
        if value is not None:
            try:
                parser(value)
            except ValueError:
                raise forms.ValidationError(message.format(value=value)) from None
        return value

    return clean


class RollingForm(ActionForm):
    """A canary, then batches, stopped past a failure limit (cmdb.jobs.rollout's rules)."""

    batch = forms.CharField(
        required=False, max_length=16,
        help_text="Hosts at a time, or a percentage of them (10%); empty: all at once.",
    )  # fmt: skip
    max_failures = forms.CharField(
        required=False, max_length=16,
        help_text="Stop once more hosts than this (or this percentage) have failed; the rest "
        "end cancelled.",
    )  # fmt: skip
    canary = forms.IntegerField(
        min_value=1, required=False,
        help_text="Send to this many hosts first; any failure among them stops the rest.",
    )  # fmt: skip

    clean_batch = _amount("batch", rollout.parse_batch, rollout.E_BATCH)
    clean_max_failures = _amount("max_failures", rollout.parse_max_failures, rollout.E_MAX_FAILURES)

    def clean(self):
        data = super().clean()
        if data.get("max_failures") and not (data.get("batch") or data.get("canary")):
            self.add_error("max_failures", rollout.E_NOTHING_TO_STOP)
        return data

    def rolling(self) -> dict:
        """The Targets' keys for these fields."""
        return {name: self.cleaned_data.get(name) for name in ("batch", "max_failures", "canary")}


class RunCommandForm(RollingForm):
    command = forms.CharField(
        widget=forms.TextInput(attrs={"size": 80, "autofocus": True}),
        help_text="Run with /bin/sh -c on each selected host.",
    )
    timeout = forms.IntegerField(
        min_value=1,
        initial=60,
        help_text="Seconds before the command is killed on a host.",
    )

    def clean_timeout(self):
        value = self.cleaned_data["timeout"]
        if value > settings.CMDB["MAX_TIMEOUT"]:
            raise forms.ValidationError(f"at most {settings.CMDB['MAX_TIMEOUT']} seconds")
        return value


class CollectFactsForm(ActionForm):
    """Nothing to fill in: shown only to confirm a collection from many hosts."""


class PushFileForm(RollingForm):
    file = forms.FileField(help_text="Sent once, in chunks; each host verifies its sha256.")
    dest = forms.CharField(
        label="target path", widget=forms.TextInput(attrs={"size": 60}),
        help_text="Absolute path on the hosts; written beside it, then renamed into place.",
    )  # fmt: skip
    archive = forms.BooleanField(
        required=False, label="unpack as a folder",
        help_text="The file is a tar (.tar, .tar.gz, .tar.xz, .tar.bz2) of a folder to put at "
        "the target path; checked here first.",
    )  # fmt: skip
    mode = forms.RegexField(regex=r"^0?[0-7]{3,4}$", required=False, help_text="e.g. 0644")
    owner = forms.RegexField(
        regex=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$", required=False,
        help_text="user or user:group (where the agent runs as root)",
    )  # fmt: skip

    def clean_dest(self):
        value = self.cleaned_data["dest"]
        if not value.startswith("/"):
            raise forms.ValidationError("give an absolute path")
        return value


class FetchFileForm(ActionForm):
    path = forms.CharField(
        widget=forms.TextInput(attrs={"size": 60, "autofocus": True}),
        help_text="Absolute path of a file on each host; each copy is kept on the server, "
        "verified by sha256, for download from the job page.",
    )

    def clean_path(self):
        value = self.cleaned_data["path"]
        if not value.startswith("/"):
            raise forms.ValidationError("give an absolute path")
        return value


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


class ConsoleRunForm(ActionForm):
    """The console's run page: a command on hosts, groups and `where` expressions."""

    command = forms.CharField(
        widget=forms.TextInput(attrs={"size": 80, "autofocus": True}),
        help_text="Run with /bin/sh -c on each matched host.",
    )
    hosts = forms.CharField(
        required=False, widget=forms.TextInput(attrs={"size": 80}),
        help_text="IPs or hostnames, separated by spaces or commas.",
    )  # fmt: skip
    groups = forms.CharField(required=False, help_text="Group names, separated by spaces.")
    where = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        label="facts", help_text="Fact expressions, one a line (or ; between them), ANDed: "
        "os=debian; disk_free_pct<10; memory_gb>=32. Alone, they filter every host.",
    )  # fmt: skip
    timeout = RunCommandForm.base_fields["timeout"]
    clean_timeout = RunCommandForm.clean_timeout

    def clean_hosts(self):
        return _words(self.cleaned_data["hosts"])

    def clean_groups(self):
        return _words(self.cleaned_data["groups"])

    def clean_where(self):
        text = self.cleaned_data["where"]
        return [e.strip() for line in text.splitlines() for e in line.split(";") if e.strip()]
