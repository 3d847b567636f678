"""Pagination."""

from rest_framework.pagination import LimitOffsetPagination


class CappedLimitOffsetPagination(LimitOffsetPagination):
    """LimitOffsetPagination with a ceiling on ``limit``.

    Without one, ``?limit=10000000000000000000`` reaches the database as a LIMIT SQLite cannot
    hold (a 500), and a large honest one loads the whole table into one response.
    """

    max_limit = 1000
