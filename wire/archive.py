"""The checks an archive of a pushed folder passes before anything of it is written.

Made twice on purpose: by the server before it sends an uploaded archive anywhere (so that an
unsafe one is refused once, with its reason, rather than by every host) and by the agent before
it extracts one (the server is not the only one who can write to the broker).
"""

import posixpath
import re
import tarfile

#: As the kernel's ELOOP limit, for following an archive's symlinks before extracting it.
MAX_LINK_HOPS = 40

E_UNSAFE_MEMBER = "unsafe archive member {name!r}: {reason}"
R_ABSOLUTE = "absolute path"
R_DOTDOT = "'..' component"
R_ITSELF = "names the destination folder itself"
R_DUPLICATE = "appears twice"
R_HARDLINK = "hard link"
R_SPECIAL = "device, fifo or other special file"
R_THROUGH_LINK = "path goes through the symlink {link!r}"
R_LINK_OUT = "symlink target {target!r} resolves outside the destination"
R_LOOP = "too many levels of symlinks"


def unsafe_name(name: str) -> bool:
    return name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name)


def unsafe_member(members: list[tarfile.TarInfo]) -> tuple[str, str] | None:
    """(name, reason) of the first member that could write outside the destination, else None.
    Symlinks are followed through the archive's own links, as the kernel would after extraction
    into an empty folder; so no path may go through a link, and no name may appear twice."""
    links, seen = {}, set()
    for m in members:
        norm = posixpath.normpath(m.name)
        reason = (R_ABSOLUTE if m.name.startswith(("/", "\\")) else R_DOTDOT if unsafe_name(m.name)
                  else R_ITSELF if norm == "." and not m.isdir() else R_DUPLICATE if norm in seen
                  else R_HARDLINK if m.islnk() else None if m.isreg() or m.isdir() or m.issym()
                  else R_SPECIAL)  # fmt: skip
        if reason:
            return m.name, reason
        seen.add(norm)
        if m.issym():
            links[norm] = m.linkname
    for m in members:
        norm = posixpath.normpath(m.name)
        parts = norm.split("/")
        for depth in range(1, len(parts)):
            if (prefix := "/".join(parts[:depth])) in links:
                return m.name, R_THROUGH_LINK.format(link=prefix)
        if m.issym() and (reason := link_escapes(links, parts[:-1], m.linkname)):
            return m.name, reason
    return None


def link_escapes(links: dict, here: list[str], target: str) -> str | None:
    """Why following ``target`` from the folder ``here`` leaves the destination, or None."""
    if target.startswith(("/", "\\")):
        return R_LINK_OUT.format(target=target)
    todo, here, hops = target.split("/")[::-1], list(here), 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return R_LINK_OUT.format(target=target)
            here.pop()
            continue
        here.append(part)
        if (link := links.get("/".join(here))) is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                return R_LOOP
            if link.startswith(("/", "\\")):
                return R_LINK_OUT.format(target=target)
            here.pop()
            todo.extend(link.split("/")[::-1])
    return None
