"""Turning what firmware and tools print into None, int or bool, the same way in every plugin."""

from __future__ import annotations

import re

# Vendors ship boards with these in SMBIOS string fields instead of leaving them empty. Stored as
# facts they would make thousands of hosts share one "serial number" in the CMDB.
PLACEHOLDERS = frozenset(
    s.casefold()
    for s in (
        "To be filled by O.E.M.",
        "To Be Filled By O.E.M.",
        "To be filled by OEM",
        "Not Specified",
        "Not Applicable",
        "Not Available",
        "Not Present",
        "Default string",
        "Default",
        "System Serial Number",
        "System Product Name",
        "System manufacturer",
        "System Version",
        "Chassis Serial Number",
        "Base Board Serial Number",
        "Serial Number",
        "0123456789",
        "123456789",
        "1234567890",
        "None",
        "N/A",
        "NA",
        "Unknown",
        "Undefined",
        "Invalid",
        "Empty",
        "OEM",
        "O.E.M.",
        "Type1ProductConfigId",
    )
)

# AMI firmware numbers its placeholders per slot ("SerNum0", "Manufacturer3", "PartNum1").
_NUMBERED_PLACEHOLDER = re.compile(r"(sernum|partnum|manufacturer|assettagnum)\d*")
# "00000000", "0000-0000", "00:00:00:00:00:00", "xxxxxxxx": filler, not an identity.
_FILLER = re.compile(r"[0\s.:_-]+|[xX\s.:_-]+")
# The all-zero and all-F UUIDs, and the one many Gigabyte/Supermicro boards ship with.
_PLACEHOLDER_UUIDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "03000200-0400-0500-0006-000700080009",
    }
)


def clean(value: str | None) -> str | None:
    """`value` stripped of whitespace and NULs; None if that leaves nothing or a placeholder."""
    if value is None:
        return None
    value = value.strip().strip("\x00").strip()
    if not value or value.casefold() in PLACEHOLDERS:
        return None
    if _NUMBERED_PLACEHOLDER.fullmatch(value.casefold()) or _FILLER.fullmatch(value):
        return None
    return value


def clean_uuid(value: str | None) -> str | None:
    """A lower-case UUID, or None for a missing or placeholder one."""
    value = clean(value)
    if value is None or value.lower() in _PLACEHOLDER_UUIDS:
        return None
    return value.lower()


def to_int(value) -> int | None:
    """An int from an int or a decimal string (old lsblk prints numbers as strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def to_bool(value) -> bool | None:
    """True/False from a bool or "1"/"0" (old lsblk), else None."""
    if isinstance(value, bool):
        return value
    if value in ("1", 1):
        return True
    if value in ("0", 0):
        return False
    return None
