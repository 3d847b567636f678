"""Tests for collectors.cpu on /proc/cpuinfo from x86 servers and VMs, arm64 and this host."""

from pathlib import Path

import pytest

from collectors.cpu import CpuCollector, count_topology, parse_cpu_list, parse_cpuinfo

DATA = Path(__file__).parent / "data" / "cpu"


def cpuinfo(name: str) -> str:
    return (DATA / f"cpuinfo_{name}").read_text()


def test_this_hosts_cpuinfo_one_socket_two_cores():
    assert parse_cpuinfo(cpuinfo("epyc_vm_this_host")) == {
        "model": "AMD EPYC",
        "sockets": 1,
        "cores": 2,
        "threads": 2,
        "mhz": 2596.148,
    }


def test_two_sockets_with_hyperthreading_count_sockets_cores_and_threads_apart():
    facts = parse_cpuinfo(cpuinfo("xeon_2s_8c_ht"))
    assert facts["model"] == "Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz"
    assert facts["sockets"] == 2
    assert facts["cores"] == 16  # core ids 0-4,8-10 per socket: gaps must not matter
    assert facts["threads"] == 32


def test_mhz_is_the_fastest_core_not_the_first_idle_one():
    assert parse_cpuinfo(cpuinfo("xeon_2s_8c_ht"))["mhz"] == 2100.012


def test_arm64_cpuinfo_without_model_name_is_named_from_implementer_and_part():
    facts = parse_cpuinfo(cpuinfo("arm64_graviton2"))
    assert facts == {
        "model": "ARM Neoverse-N1",
        "sockets": None,  # arm64 cpuinfo has no topology: the collector asks sysfs
        "cores": None,
        "threads": 4,
        "mhz": None,
    }


def test_raspberry_pi_board_lines_after_the_processors_are_not_a_processor():
    facts = parse_cpuinfo(cpuinfo("arm64_raspberrypi4"))
    assert facts["model"] == "ARM Cortex-A72"
    assert facts["threads"] == 4


def test_vm_cpuinfo_without_physical_id_leaves_topology_unknown():
    facts = parse_cpuinfo(cpuinfo("xen_pv_no_topology"))
    assert facts["sockets"] is None and facts["cores"] is None
    assert facts["threads"] == 2
    assert facts["mhz"] == 2500.054


def test_unknown_arm_part_still_gets_a_model():
    text = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xfff\n"
    assert parse_cpuinfo(text)["model"] == "ARM part 0xfff"


def test_empty_cpuinfo_is_all_none():
    assert set(parse_cpuinfo("").values()) == {None}


def test_cores_from_cpu_cores_line_when_core_ids_are_hidden():
    block = "processor\t: {n}\nphysical id\t: 0\ncpu cores\t: 4\n\n"
    text = "".join(block.format(n=n) for n in range(8))
    facts = parse_cpuinfo(text)
    assert (facts["sockets"], facts["cores"], facts["threads"]) == (1, 4, 8)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")], (2, 4)),
        ([("0", "0"), ("0", "0")], (1, 1)),  # two threads of one core
        ([("0", "0"), (None, "1")], (None, None)),
        ([("-1\n", "0\n")], (None, None)),  # sysfs "no package" on some ARM kernels
        ([("0\n", None)], (1, None)),
        ([], (None, None)),
    ],
)
def test_count_topology(pairs, expected):
    assert count_topology(pairs) == expected


def test_parse_cpu_list():
    assert parse_cpu_list("0-1\n") == [0, 1]
    assert parse_cpu_list("0-3,6,8-9") == [0, 1, 2, 3, 6, 8, 9]
    assert parse_cpu_list("") == []
    assert parse_cpu_list("a-b") == []


def test_collector_takes_arm_topology_from_sysfs_and_mhz_from_psutil(fake_source):
    files = {
        "/proc/cpuinfo": cpuinfo("arm64_graviton2"),
        "/sys/devices/system/cpu/online": "0-3\n",
    }
    for n in range(4):
        topology = f"/sys/devices/system/cpu/cpu{n}/topology"
        files[f"{topology}/physical_package_id"] = "0\n"
        files[f"{topology}/core_id"] = f"{n}\n"
    source = fake_source(files=files, cpu_freq_mhz=2500.0)

    assert CpuCollector(source).collect() == {
        "model": "ARM Neoverse-N1",
        "sockets": 1,
        "cores": 4,
        "threads": 4,
        "mhz": 2500.0,
    }


def test_collector_keeps_cpuinfo_values_over_sysfs_and_psutil(fake_source):
    source = fake_source(
        files={"/proc/cpuinfo": cpuinfo("xeon_2s_8c_ht"), "/sys/devices/system/cpu/online": "0"},
        cpu_freq_mhz=800.0,
    )
    facts = CpuCollector(source).collect()
    assert (facts["sockets"], facts["cores"], facts["threads"], facts["mhz"]) == (
        2,
        16,
        32,
        2100.012,
    )


def test_collector_without_cpuinfo_counts_online_cpus(fake_source):
    source = fake_source(files={"/sys/devices/system/cpu/online": "0-7\n"})
    facts = CpuCollector(source).collect()
    assert facts["threads"] == 8
    assert facts["model"] is facts["sockets"] is facts["cores"] is facts["mhz"] is None
