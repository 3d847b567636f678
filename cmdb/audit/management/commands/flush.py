"""`manage.py flush`, Django's, with the audit trail emptied too.

Flush deletes every row of every table, and is asked for by name (the test runner does after
each transactional test): the append-only triggers let it through for that one transaction.
"""

from django.core.management.commands import flush

from cmdb.audit.retention import deletes_allowed


class Command(flush.Command):
    def handle(self, **options):
        with deletes_allowed(None, using=options["database"]):
            return super().handle(**options)
