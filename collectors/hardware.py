"""The machine itself: vendor, product, serial, UUID, firmware, chassis (SMBIOS, via sysfs)."""

from __future__ import annotations

from collectors.base import Collector
from collectors.values import clean, clean_uuid

DMI_PATH = "/sys/class/dmi/id/{file}"
# Boards without SMBIOS (most ARM boards) describe themselves in the device tree instead.
DEVICE_TREE_PATH = "/sys/firmware/devicetree/base/{file}"

#: fact -> /sys/class/dmi/id file. product_serial and product_uuid are readable by root only.
DMI_FILES = {
    "vendor": "sys_vendor",
    "product": "product_name",
    "serial": "product_serial",
    "uuid": "product_uuid",
    "bios_vendor": "bios_vendor",
    "bios_version": "bios_version",
    "bios_date": "bios_date",
    "chassis_type": "chassis_type",
}

# SMBIOS 3.x, 7.4.1 "System Enclosure or Chassis Types"; sysfs gives the number only.
CHASSIS_TYPES = {
    1: "Other",
    3: "Desktop",
    4: "Low Profile Desktop",
    5: "Pizza Box",
    6: "Mini Tower",
    7: "Tower",
    8: "Portable",
    9: "Laptop",
    10: "Notebook",
    11: "Hand Held",
    12: "Docking Station",
    13: "All in One",
    14: "Sub Notebook",
    15: "Space-saving",
    16: "Lunch Box",
    17: "Main Server Chassis",
    18: "Expansion Chassis",
    19: "SubChassis",
    20: "Bus Expansion Chassis",
    21: "Peripheral Chassis",
    22: "RAID Chassis",
    23: "Rack Mount Chassis",
    24: "Sealed-case PC",
    25: "Multi-system chassis",
    26: "Compact PCI",
    27: "Advanced TCA",
    28: "Blade",
    29: "Blade Enclosure",
    30: "Tablet",
    31: "Convertible",
    32: "Detachable",
    33: "IoT Gateway",
    34: "Embedded PC",
    35: "Mini PC",
    36: "Stick PC",
}  # 2 is "Unknown", which is None here


def parse_dmi_id(files: dict[str, str | None]) -> dict:
    """Facts from the contents of /sys/class/dmi/id files ({file name: text or None})."""
    facts = {fact: clean(files.get(file)) for fact, file in DMI_FILES.items()}
    facts["uuid"] = clean_uuid(files.get("product_uuid"))
    facts["chassis_type"] = chassis_name(files.get("chassis_type"))
    return facts


def chassis_name(text: str | None) -> str | None:
    """The SMBIOS name of a chassis type number ("23" -> "Rack Mount Chassis"), or None."""
    try:
        # Bit 7 of the byte is the "chassis lock present" flag, not part of the type.
        return CHASSIS_TYPES.get(int((text or "").strip()) & 0x7F)
    except ValueError:
        return None


class HardwareCollector(Collector):
    provides = tuple(DMI_FILES)

    def gather(self) -> dict:
        facts = parse_dmi_id(
            {file: self.source.read(DMI_PATH.format(file=file)) for file in DMI_FILES.values()}
        )
        if facts["product"] is None:
            facts["product"] = clean(self.source.read(DEVICE_TREE_PATH.format(file="model")))
        if facts["serial"] is None:
            facts["serial"] = clean(self.source.read(DEVICE_TREE_PATH.format(file="serial-number")))
        return facts
