"""The audit trail (issue 16): an append-only, hash-chained record of who did what, from where.

Others call one function, ``cmdb.audit.record(actor, action, ...)`` (cmdb/audit/trail.py).
"""


def __getattr__(name):
    # `from cmdb.audit import record` must work, yet this package is imported while Django
    # loads its apps, before models can be: the function is fetched on first use.
    if name == "record":
        from cmdb.audit.trail import record

        return record
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
