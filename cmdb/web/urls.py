"""Web routes."""

urlpatterns: list = []
