"""The actor behind a request: a Django user (or the server itself) and the front-end it came
through. Every service takes one; the job records its label, the audit trail all of it."""

from dataclasses import dataclass

#: The front-ends a request comes through.
VIA = ("cli", "api", "admin", "web", "schedule", "system")


@dataclass(frozen=True)
class Actor:
    #: The Django user; None for the server's own doing (a schedule, a later batch).
    user: object | None
    via: str
    #: The client's address (API, admin, web); "" for the CLI and the server.
    address: str = ""

    def __post_init__(self):
        if self.via not in VIA:
            raise ValueError(f"via must be one of {', '.join(VIA)}, not {self.via!r}")

    @property
    def username(self) -> str:
        return self.user.get_username() if self.user is not None else ""

    @property
    def label(self) -> str:
        """What a job's requested_by says: "cli:alice", "api:bob@10.0.0.5", "schedule"."""
        who = f"{self.via}:{self.username}" if self.username else self.via
        return f"{who}@{self.address}" if self.address else who

    @classmethod
    def system(cls, via: str = "system") -> "Actor":
        return cls(None, via)


#: Where a request comes in, by path prefix; anything else is the web front-end.
VIA_BY_PATH = (("/api/", "api"), ("/admin/", "admin"))


def via_of(request) -> str:
    return next((via for prefix, via in VIA_BY_PATH if request.path.startswith(prefix)), "web")


def actor_of(request, via: str | None = None) -> Actor:
    """The actor of an HTTP request, as far as it is authenticated now (anonymous: nobody);
    through ``via``, else as its path says; from the address the connection came from (not
    X-Forwarded-For, which the client writes)."""
    user = getattr(request, "user", None)
    user = user if user is not None and user.is_authenticated else None
    return Actor(user, via or via_of(request), request.META.get("REMOTE_ADDR", "") or "")
