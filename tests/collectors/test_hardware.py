"""Tests for collectors.hardware on /sys/class/dmi/id trees of real kinds of machines."""

from pathlib import Path

import pytest

from collectors.hardware import HardwareCollector, chassis_name, parse_dmi_id

DATA = Path(__file__).parent / "data" / "hardware"


def dmi_files(scenario: str) -> dict[str, str]:
    return {path.name: path.read_text() for path in (DATA / scenario).iterdir()}


def test_dell_server():
    assert parse_dmi_id(dmi_files("dmi_dell_r740")) == {
        "vendor": "Dell Inc.",
        "product": "PowerEdge R740",
        "serial": "7XK2P53",
        "uuid": "4c4c4544-0058-4b10-8032-b7c04f503533",
        "bios_vendor": "Dell Inc.",
        "bios_version": "2.19.1",
        "bios_date": "06/21/2023",
        "chassis_type": "Rack Mount Chassis",
    }


@pytest.mark.parametrize("scenario", ["dmi_whitebox_ami_placeholders", "dmi_asrock_default_string"])
def test_placeholder_serials_become_none(scenario):
    facts = parse_dmi_id(dmi_files(scenario))
    assert facts["vendor"] is None
    assert facts["product"] is None
    assert facts["serial"] is None
    assert facts["uuid"] is None  # 03000200-0400-... and the all-zero UUID
    assert facts["bios_vendor"].startswith("American Megatrends")  # real values survive


def test_qemu_vm_with_empty_serial():
    facts = parse_dmi_id(dmi_files("dmi_qemu_kvm"))
    assert facts["vendor"] == "QEMU"
    assert facts["product"] == "Standard PC (Q35 + ICH9, 2009)"
    assert facts["serial"] is None
    assert facts["uuid"] == "6b3d1f2a-8c4e-4d9b-a1f0-2e7c5b9d8a31"
    assert facts["chassis_type"] == "Other"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("23\n", "Rack Mount Chassis"),
        ("17", "Main Server Chassis"),
        ("2", None),
        ("", None),
        (None, None),
    ],
)
def test_chassis_type_numbers_become_smbios_names(text, name):
    assert chassis_name(text) == name


def test_collector_without_root_reports_no_serial_or_uuid(fake_source):
    # product_serial and product_uuid are mode 0400: an unprivileged read fails, Source says None.
    files = {
        f"/sys/class/dmi/id/{name}": text
        for name, text in dmi_files("dmi_dell_r740").items()
        if name not in ("product_serial", "product_uuid")
    }
    facts = HardwareCollector(fake_source(files=files)).collect()
    assert facts["vendor"] == "Dell Inc."
    assert facts["serial"] is None and facts["uuid"] is None


def test_collector_in_a_container_without_dmi_reports_all_none(fake_source):
    assert set(HardwareCollector(fake_source()).collect().values()) == {None}


def test_collector_on_a_board_without_smbios_uses_the_device_tree(fake_source):
    files = {
        f"/sys/firmware/devicetree/base/{path.name}": path.read_text()
        for path in (DATA / "devicetree_raspberrypi4").iterdir()
    }
    facts = HardwareCollector(fake_source(files=files)).collect()
    assert facts["product"] == "Raspberry Pi 4 Model B Rev 1.4"  # NUL terminator dropped
    assert facts["serial"] == "10000000a3c1d2e4"
    assert facts["vendor"] is None
