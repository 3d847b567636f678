"""Writing thousands of rows in one prepared statement each (executemany), not through the ORM's
per-row SQL compiler.

Django's bulk_create and bulk_update compile every value of every row (bulk_update builds a CASE
expression per field and row): at 10,000 host tasks that was 3 s to record a job and most of
the time the central worker took per result. Here the SQL is made once per call from the
model's own fields, and each value is prepared as the ORM would (``get_db_prep_save``), except
plain values on columns where that changes nothing (a str for a text column, an int for an
integer one, an aware datetime): preparing those was most of the rest.
"""

import operator
from datetime import datetime

from django.db import connection, models

#: Fields whose preparation is the identity for values of the types in _PLAIN (not dates, not
#: JSON, not IP addresses, which each backend adapts).
_PLAIN_FIELDS = (models.CharField, models.TextField, models.IntegerField, models.FloatField,
                 models.BooleanField)  # fmt: skip
_PLAIN = frozenset({str, int, float, bool, type(None)})
#: Rows per statement: SQLite caps the variables in one statement, executemany does not care.
CHUNK = 1000


def _preparer(field: models.Field):
    if isinstance(field, models.DateTimeField):
        adapt = connection.ops.adapt_datetimefield_value

        def prep_time(value):
            # An aware datetime is what get_prep_value would hand on as it is.
            if value is None or (isinstance(value, datetime) and value.tzinfo is not None):
                return adapt(value)
            return field.get_db_prep_save(value, connection)

        return prep_time
    if isinstance(field, _PLAIN_FIELDS) and not isinstance(
        field, (models.GenericIPAddressField, models.JSONField)
    ):

        def prep(value):
            return value if type(value) in _PLAIN else field.get_db_prep_save(value, connection)

        return prep
    return lambda value: field.get_db_prep_save(value, connection)


def _rows(objs, fields: list[models.Field], pre_save: bool) -> list[list]:
    # As an INSERT through the ORM: auto_now and auto_now_add fill themselves in (pre_save);
    # every other field's pre_save is its attribute.
    getters = [
        (lambda obj, f=f: f.pre_save(obj, True))
        if pre_save
        and (
            getattr(f, "auto_now", False)
            or getattr(f, "auto_now_add", False)
            or getattr(f, "derived", False)
        )
        else operator.attrgetter(f.attname)
        for f in fields
    ]
    preps = [_preparer(f) for f in fields]
    pairs = list(zip(getters, preps, strict=True))
    return [[prep(get(obj)) for get, prep in pairs] for obj in objs]


def update_many(model: type[models.Model], objs, field_names: list[str]) -> None:
    """``UPDATE ... SET field = %s, ... WHERE pk = %s`` for every object, as they are now."""
    fields = [model._meta.get_field(name) for name in field_names]
    qn = connection.ops.quote_name
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        qn(model._meta.db_table),
        ", ".join(f"{qn(f.column)} = %s" for f in fields),
        qn(model._meta.pk.column),
    )
    rows = _rows(objs, fields, pre_save=False)
    for row, obj in zip(rows, objs, strict=True):
        row.append(obj.pk)
    _execute(sql, rows)


def insert_many(model: type[models.Model], objs, conflict: str | None = None,
                update_fields: list[str] | None = None) -> None:  # fmt: skip
    """INSERT every object (every concrete field but an auto primary key). With ``conflict``
    (a unique column) and ``update_fields``, a row that exists already is updated instead
    (``ON CONFLICT ... DO UPDATE``, as SQLite and PostgreSQL both say it). Primary keys are not
    set on the objects: read them back by a unique field if they are needed."""
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not (f.primary_key and f.auto_created)
              and not isinstance(f, models.AutoField)]  # fmt: skip
    qn = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        qn(meta.db_table),
        ", ".join(qn(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    if conflict:
        columns = [meta.get_field(name).column for name in update_fields or []]
        sql += " ON CONFLICT ({}) DO UPDATE SET {}".format(
            qn(meta.get_field(conflict).column),
            ", ".join(f"{qn(c)} = excluded.{qn(c)}" for c in columns),
        )
    _execute(sql, _rows(objs, fields, pre_save=True))


def _execute(sql: str, rows: list[list]) -> None:
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            cursor.executemany(sql, rows[start : start + CHUNK])
