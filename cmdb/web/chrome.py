"""What every console page's template is given: the admin's header and user links, without
its model sidebar (a table of 1,000 hosts needs the width at 1366 px)."""

from django.contrib import admin


def context(request) -> dict:
    return {**admin.site.each_context(request), "is_nav_sidebar_enabled": False}
