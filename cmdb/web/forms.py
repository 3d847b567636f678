"""Forms of the admin actions."""

from django import forms
from django.conf import settings


class RunCommandForm(forms.Form):
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


class PushFileForm(forms.Form):
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
    batch = forms.IntegerField(min_value=1, required=False, help_text="hosts at a time")
    max_failures = forms.IntegerField(
        min_value=0, required=False, help_text="stop once more hosts than this have failed"
    )

    def clean_dest(self):
        value = self.cleaned_data["dest"]
        if not value.startswith("/"):
            raise forms.ValidationError("give an absolute path")
        return value


class FetchFileForm(forms.Form):
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
