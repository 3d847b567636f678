"""A column that sorts addresses as numbers, the same on every database."""

import ipaddress

from django.db import models


def ip_number(ip) -> int:
    """127.0.2.10 as the number it is (0 for what is no IPv4 address yet, such as a blank)."""
    try:
        return int(ipaddress.IPv4Address(str(ip)))
    except ValueError:
        return 0


class IPKeyField(models.BigIntegerField):
    """The number of the model's ``ip`` (IPv4), kept beside it on every save. ``ip`` sorts as
    text on SQLite (127.0.2.10 before 127.0.2.9) and as inet on PostgreSQL: ordering by this
    is numeric on both. Set at each write (``pre_save``; cmdb.jobs.bulk calls it too), so a
    ``QuerySet.update(ip=...)`` must set it as well."""

    #: cmdb.jobs.bulk asks pre_save of the fields that say this.
    derived = True

    def __init__(self, *args, source: str = "ip", **kwargs):
        self.source = source
        kwargs.setdefault("editable", False)
        kwargs.setdefault("default", 0)
        kwargs.setdefault("db_index", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if self.source != "ip":
            kwargs["source"] = self.source
        return name, path, args, kwargs

    def pre_save(self, model_instance, add):
        value = ip_number(getattr(model_instance, self.source))
        setattr(model_instance, self.attname, value)
        return value
