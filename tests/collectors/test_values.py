"""Tests for collectors.values: placeholder strings and old-lsblk numbers."""

import pytest

from collectors.values import clean, clean_uuid, to_bool, to_int


@pytest.mark.parametrize(
    "junk",
    [
        "To be filled by O.E.M.",
        "To Be Filled By O.E.M.",
        "Not Specified",
        "Default string",
        "0123456789",
        "System Serial Number",
        "None",
        "N/A",
        "Unknown",
        "00000000",
        "0000-0000",
        "00:00:00:00:00:00",
        "xxxxxxxx",
        "SerNum0",
        "Manufacturer3",
        "",
        "   ",
        "\x00",
        None,
    ],
)
def test_placeholder_strings_become_none(junk):
    assert clean(junk) is None


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ("PowerEdge R740\n", "PowerEdge R740"),
        ("HMA84GR7CJR4N-VK    ", "HMA84GR7CJR4N-VK"),
        ("DIMM0", "DIMM0"),  # a locator, not a placeholder
        ("10000000a3c1d2e4\x00", "10000000a3c1d2e4"),
        ("0x5000c500a1b2c3d4", "0x5000c500a1b2c3d4"),
    ],
)
def test_real_values_are_only_stripped(value, cleaned):
    assert clean(value) == cleaned


@pytest.mark.parametrize(
    ("value", "uuid"),
    [
        ("4C4C4544-0058-4B10-8032-B7C04F503533\n", "4c4c4544-0058-4b10-8032-b7c04f503533"),
        ("00000000-0000-0000-0000-000000000000", None),
        ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", None),
        ("03000200-0400-0500-0006-000700080009", None),
        (None, None),
    ],
)
def test_placeholder_uuids_become_none(value, uuid):
    assert clean_uuid(value) == uuid


def test_to_int_and_to_bool_read_old_lsblk_strings():
    assert to_int("480103981056") == 480103981056
    assert to_int(512) == 512
    assert to_int(None) is None
    assert to_int("12G") is None
    assert to_int(True) is None
    assert (to_bool("1"), to_bool("0"), to_bool(True), to_bool(None)) == (True, False, True, None)
