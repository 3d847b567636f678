"""The audit table is append-only in the database itself: triggers refuse UPDATE, and DELETE
but of rows older than the cut-off a prune declares for its own transaction (see
cmdb/audit/retention.py). A later migration that makes SQLite rebuild this table (most
AlterField do) drops its triggers: it must create them again (tests/audit checks they exist).
"""

from django.db import migrations

TABLE = "audit_auditentry"
E_REFUSED = "audit entries are append-only: {op} refused (only `manage.py audit prune` deletes)"

SQLITE = [
    f"""CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{E_REFUSED.format(op="UPDATE")}'); END""",
    # cmdb_audit_prune(): "all", a time in the column's own text form, or "". A connection
    # without that function (the sqlite3 shell) fails to prepare any DELETE here at all.
    f"""CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    WHEN NOT (cmdb_audit_prune() = 'all' OR OLD."at" < cmdb_audit_prune())
    BEGIN SELECT RAISE(ABORT, '{E_REFUSED.format(op="DELETE")}'); END""",
]
SQLITE_DROP = [f"DROP TRIGGER IF EXISTS {TABLE}_no_update",
               f"DROP TRIGGER IF EXISTS {TABLE}_no_delete"]  # fmt: skip

POSTGRESQL = [
    # cmdb.audit_prune: set for one transaction by the prune (a time) or flush ("all").
    f"""CREATE FUNCTION {TABLE}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        prune text := coalesce(current_setting('cmdb.audit_prune', true), '');
    BEGIN
        IF prune = 'all' THEN
            RETURN OLD;
        END IF;
        IF TG_OP = 'DELETE' AND TG_LEVEL = 'ROW' AND prune <> '' THEN
            IF OLD."at" < prune::timestamptz THEN
                RETURN OLD;
            END IF;
        END IF;
        RAISE EXCEPTION 'audit entries are append-only: % refused (only `manage.py audit prune` deletes)',
            TG_OP USING ERRCODE = 'integrity_constraint_violation';
    END
    $$""",
    f"""CREATE TRIGGER {TABLE}_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {TABLE}_append_only()""",
    # TRUNCATE fires no row trigger: it needs its own.
    f"""CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_append_only()""",
]
POSTGRESQL_DROP = [f"DROP TRIGGER IF EXISTS {TABLE}_no_truncate ON {TABLE}",
                   f"DROP TRIGGER IF EXISTS {TABLE}_append_only ON {TABLE}",
                   f"DROP FUNCTION IF EXISTS {TABLE}_append_only()"]  # fmt: skip

INSTALL = {"sqlite": SQLITE, "postgresql": POSTGRESQL}
REMOVE = {"sqlite": SQLITE_DROP, "postgresql": POSTGRESQL_DROP}
E_VENDOR = "no append-only triggers for {vendor}: add them here before using this database"


def _run(statements: dict):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements:
            raise RuntimeError(E_VENDOR.format(vendor=vendor))
        for sql in statements[vendor]:
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(_run(INSTALL), _run(REMOVE))]
