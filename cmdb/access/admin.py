from django import forms
from django.contrib import admin

from cmdb.access import grants
from cmdb.access.models import Action, Grant


class GrantForm(forms.ModelForm):
    actions = forms.MultipleChoiceField(choices=Action.choices,
                                        widget=forms.CheckboxSelectMultiple)  # fmt: skip
    where = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                            help_text="Fact expressions, one per line (as --where takes them), "
                                      "all of which a host must match.")  # fmt: skip

    class Meta:
        model = Grant
        fields = ["users", "groups", "actions", "all_hosts", "host_groups", "where", "max_hosts",
                  "note"]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["where"] = "\n".join(self.instance.where)

    def clean_where(self):
        return [line.strip() for line in self.cleaned_data["where"].splitlines() if line.strip()]

    def clean(self):
        data = super().clean()
        host_groups = [g.name for g in data.get("host_groups") or []]
        given = (data.get("actions") or [], host_groups, data.get("all_hosts", False),
                 data.get("where") or [])  # fmt: skip
        for problem in grants.check(*given):
            self.add_error(None, problem)
        if not (data.get("users") or data.get("groups")):
            self.add_error(None, "give users or groups")
        return data


@admin.register(Grant)
class GrantAdmin(admin.ModelAdmin):
    form = GrantForm
    list_display = ("id", "__str__", "max_hosts", "note", "created")
    filter_horizontal = ("users", "groups", "host_groups")
