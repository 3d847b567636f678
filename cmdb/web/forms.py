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
