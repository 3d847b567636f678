"""Fact collectors: one plugin per subject, pure Python, no Django (see issue 4)."""
