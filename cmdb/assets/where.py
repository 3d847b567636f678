"""`--where` expressions on stored facts: ``os=debian``, ``disk_free_pct<10``, ``cpu_model~xeon``.

Each expression becomes a Q on Host; several are ANDed. Unknown fields, operators a field does
not support, and values of the wrong type are errors naming the expression.
"""

import math
import re

from django.db.models import Q

EXPRESSION = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|!=|=|<|>|~)\s*(.*?)\s*$")

#: field -> (Host lookup path, type). Text compares without case; numbers allow < <= > >=.
FIELDS = {
    "ip": ("ip", str),
    "hostname": ("hostname", str),
    "status": ("agent_status", str),
    "group": ("groups__name", str),
    "os": ("facts__os", str),
    "os_version": ("facts__os_version", str),
    "kernel": ("facts__kernel", str),
    "arch": ("facts__arch", str),
    "fqdn": ("facts__fqdn", str),
    "cpu_model": ("facts__cpu_model", str),
    "vendor": ("facts__vendor", str),
    "product": ("facts__product", str),
    "serial": ("facts__serial", str),
    "cpu_threads": ("facts__cpu_threads", int),
    "memory_gb": ("facts__memory_bytes", float),
    "disk_free_pct": ("facts__disk_free_pct", float),
}
NUMERIC_OPS = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}

E_SYNTAX = "--where {expr!r}: expected FIELD OP VALUE with OP one of = != < <= > >= ~"
E_FIELD = "--where {expr!r}: unknown field {field!r} (known: {known})"
E_NUMBER = "--where {expr!r}: {field} compares numbers, {value!r} is not one"
E_TEXT_OP = "--where {expr!r}: {field} is text; use = != or ~ (contains)"


def parse(expr: str) -> Q:
    match = EXPRESSION.match(expr)
    if not match or not match.group(3):
        raise ValueError(E_SYNTAX.format(expr=expr))
    field, op, value = match.groups()
    if field not in FIELDS:
        raise ValueError(E_FIELD.format(expr=expr, field=field, known=", ".join(sorted(FIELDS))))
    path, kind = FIELDS[field]
    if kind is str:
        if op in NUMERIC_OPS:
            raise ValueError(E_TEXT_OP.format(expr=expr, field=field))
        lookup = {"=": "iexact", "!=": "iexact", "~": "icontains"}[op]
        q = Q(**{f"{path}__{lookup}": value})
        return ~q if op == "!=" else q
    try:
        number = kind(value)
        if not math.isfinite(number):
            raise ValueError(value)
        if field == "memory_gb":
            number = int(number * 2**30)
    except (ValueError, OverflowError):
        raise ValueError(E_NUMBER.format(expr=expr, field=field, value=value)) from None
    if op == "~":
        raise ValueError(E_NUMBER.format(expr=expr, field=field, value=value))
    if op in ("=", "!="):
        q = Q(**{path: number})
        return ~q if op == "!=" else q
    return Q(**{f"{path}__{NUMERIC_OPS[op]}": number})


def parse_all(expressions: list[str]) -> tuple[Q, list[str]]:
    """AND of every expression, and the problems found (all of them, not just the first)."""
    q, problems = Q(), []
    for expr in expressions:
        try:
            q &= parse(expr)
        except ValueError as exc:
            problems.append(str(exc))
    return q, problems
