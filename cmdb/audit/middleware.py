"""Make the request being served the current actor of what the app records by itself."""

from cmdb.audit.context import acting_as


class CurrentActorMiddleware:
    """After AuthenticationMiddleware. The request, not its user, is kept: an API token is
    authenticated later, inside the view, and the actor is read when an entry is written."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with acting_as(request):
            return self.get_response(request)
