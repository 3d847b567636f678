"""Tests for collectors.memory on /proc/meminfo and `dmidecode -t memory` output."""

from pathlib import Path

from collectors.memory import (
    DMIDECODE_MEMORY,
    MemoryCollector,
    parse_dmidecode,
    parse_dmidecode_memory,
    parse_meminfo,
)

DATA = Path(__file__).parent / "data" / "memory"

GiB = 1 << 30


def data(name: str) -> str:
    return (DATA / name).read_text()


def test_meminfo_of_this_host_in_bytes():
    meminfo = parse_meminfo(data("meminfo_this_host"))
    assert meminfo["MemTotal"] == 24684096 * 1024
    assert meminfo["SwapTotal"] == 0
    assert meminfo["HugePages_Total"] == 0  # a count, not kB


def test_meminfo_of_a_server_with_swap():
    meminfo = parse_meminfo(data("meminfo_server_with_swap"))
    assert meminfo["MemTotal"] == 394717144 * 1024
    assert meminfo["SwapTotal"] == 4194300 * 1024
    assert meminfo["HugePages_Total"] == 16


def test_populated_dimms_of_a_dell_server():
    assert parse_dmidecode_memory(data("dmidecode_memory_dell_r740")) == [
        {
            "locator": "A1",
            "size_bytes": 32 * GiB,
            "type": "DDR4",
            "speed_mts": 2666,
            "manufacturer": "00AD063200AD",
            "serial": "2B7C9A41",
        },
        {
            "locator": "A2",
            "size_bytes": 32 * GiB,
            "type": "DDR4",
            "speed_mts": 2666,
            "manufacturer": "00AD063200AD",
            "serial": "2B7C9B07",
        },
        {
            "locator": "B1",
            "size_bytes": 16 * GiB,
            "type": "DDR4",
            "speed_mts": 2666,  # the module's rated speed, not the configured 2400
            "manufacturer": "Micron Technology",
            "serial": "1F3E5D27",
        },
    ]


def test_empty_dimm_slots_are_skipped():
    for name in ("dmidecode_memory_dell_r740", "dmidecode_memory_supermicro_v2_12"):
        slots = [f for t, _, f in parse_dmidecode(data(name)) if t == 17]
        dimms = parse_dmidecode_memory(data(name))
        assert any(slot["Size"] == "No Module Installed" for slot in slots)
        assert len(dimms) == sum(slot["Size"] != "No Module Installed" for slot in slots)
        assert all(dimm["size_bytes"] for dimm in dimms)


def test_old_dmidecode_sizes_in_mb_and_speeds_in_mhz():
    dimms = parse_dmidecode_memory(data("dmidecode_memory_supermicro_v2_12"))
    assert [(d["locator"], d["size_bytes"], d["speed_mts"]) for d in dimms] == [
        ("P1-DIMMA1", 16 * GiB, 2133),
        ("P1-DIMMB1", 16 * GiB, 2133),
    ]


def test_placeholder_dimm_serials_become_none():
    dimms = parse_dmidecode_memory(data("dmidecode_memory_supermicro_v2_12"))
    assert [d["serial"] for d in dimms] == ["3612A0F1", None]  # the second says "00000000"
    qemu = parse_dmidecode_memory(data("dmidecode_memory_qemu"))
    assert qemu == [
        {
            "locator": "DIMM 0",
            "size_bytes": 8 * GiB,
            "type": "RAM",
            "speed_mts": None,
            "manufacturer": "QEMU",
            "serial": None,
        }
    ]


def test_dmidecode_without_smbios_tables_gives_no_dimms():
    assert parse_dmidecode_memory(data("dmidecode_memory_no_smbios")) == []


def test_parse_dmidecode_keeps_titles_and_ignores_list_items():
    records = parse_dmidecode(data("dmidecode_memory_dell_r740"))
    assert [(t, title) for t, title, _ in records[:2]] == [
        (16, "Physical Memory Array"),
        (17, "Memory Device"),
    ]
    assert records[0][2]["Number Of Devices"] == "24"


def test_collector_on_a_server_with_dmidecode(fake_source):
    source = fake_source(
        files={"/proc/meminfo": data("meminfo_server_with_swap")},
        commands={DMIDECODE_MEMORY: data("dmidecode_memory_dell_r740")},
    )
    facts = MemoryCollector(source).collect()
    assert facts["total_bytes"] == 394717144 * 1024
    assert facts["swap_bytes"] == 4194300 * 1024
    assert [d["locator"] for d in facts["dimms"]] == ["A1", "A2", "B1"]
    assert source.ran == [("dmidecode", "-t", "memory")]


def test_collector_without_dmidecode_or_root_has_no_dimms(fake_source):
    # FakeSource.run answers None for any command it has no output for: missing or failed.
    source = fake_source(files={"/proc/meminfo": data("meminfo_this_host")})
    assert MemoryCollector(source).collect() == {
        "total_bytes": 24684096 * 1024,
        "swap_bytes": 0,
        "dimms": [],
    }
