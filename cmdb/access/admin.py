"""Admin for grants, and the mixin that narrows every other admin to what its user may view."""

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from rest_framework.authtoken.admin import TokenAdmin as DRFTokenAdmin
from rest_framework.authtoken.models import TokenProxy

from cmdb import audit
from cmdb.access import attempts, grants, visible
from cmdb.access.actor import actor_of
from cmdb.access.models import Action, Grant
from cmdb.audit.choices import AuditActionChoices


class LimitedLoginForm(AdminAuthenticationForm):
    """The admin's (and the web console's) login, limited as the token endpoint's
    (cmdb.access.attempts, the same counts): the same passwords, guessed here, would be
    unlimited otherwise."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is None or not password:
            return super().clean()
        address = (self.request.META.get("REMOTE_ADDR", "") if self.request else "") or ""
        try:
            wait = attempts.begin(address, username)
        except attempts.Unavailable:
            raise ValidationError(attempts.E_UNCOUNTED, code="uncounted") from None
        if wait:
            raise ValidationError(attempts.E_TOO_MANY.format(wait=wait), code="too_many")
        cleaned = super().clean()  # wrong, inactive or not staff: stays counted
        attempts.succeeded(address, username)
        return cleaned


admin.site.login_form = LimitedLoginForm


class ViewableMixin:
    """An admin (or inline) whose rows are only those its user may view (cmdb.access.visible):
    the changelist, the change page (another's is "does not exist"), the actions' selection.
    ``viewable(user, queryset)``: by default, rows whose ``host`` is a host they may view."""

    viewable = staticmethod(visible.on_viewable_hosts)

    def get_queryset(self, request):
        return self.viewable(request.user, super().get_queryset(request))


class ViewableValuesFilter(admin.AllValuesFieldListFilter):
    """The values of a related row's field (``facts__os``) among the admin's own rows, which
    are what the user may view: Django's own lists the values of every row of that model."""

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        rows = model_admin.get_queryset(request).distinct().order_by(field_path)
        self.lookup_choices = rows.values_list(field_path, flat=True)


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

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)  # the users and groups too
        action = AuditActionChoices.GRANT_CHANGE if change else AuditActionChoices.GRANT_ADD
        audit.record(actor_of(request, "admin"), action,
                     detail={"grant": form.instance.pk, "text": str(form.instance)})  # fmt: skip

    def delete_model(self, request, obj):
        pk, text = obj.pk, str(obj)
        super().delete_model(request, obj)
        audit.record(actor_of(request, "admin"), AuditActionChoices.GRANT_REMOVE,
                     detail={"grant": pk, "text": text})  # fmt: skip


class TokenAdmin(DRFTokenAdmin):
    """API tokens for superusers only: a token is its user's whole identity, so whoever may
    see or make another's acts as them (and the audit trail would name the victim)."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return self.has_module_permission(request)

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission


admin.site.unregister(TokenProxy)
admin.site.register(TokenProxy, TokenAdmin)
