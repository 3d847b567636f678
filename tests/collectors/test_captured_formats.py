"""The parsers on real captures of each format, field by field (sources: fixtures/README.md)."""

from pathlib import Path

import pytest

from collectors.cpu import CpuCollector, parse_cpuinfo
from collectors.disks import LSBLK, LSBLK_PAIRS, DisksCollector, parse_lsblk, parse_lsblk_pairs
from collectors.hardware import HardwareCollector
from collectors.memory import parse_dmidecode_memory, parse_meminfo
from collectors.network import IP_JSON, IP_TEXT, NetworkCollector, parse_ip_addr, parse_ip_json
from collectors.remote import parse_df
from collectors.system import parse_os_release

FIXTURES = Path(__file__).parent / "fixtures"
FIELDS = ("model", "sockets", "cores", "threads", "mhz")


def text(*parts: str) -> str:
    return FIXTURES.joinpath(*parts).read_text()


def host_tree(root: Path) -> dict[str, str]:
    """Every file under a captured host's root, by its path on that host."""
    files = (p for p in root.rglob("*") if p.is_file())
    return {"/" + p.relative_to(root).as_posix(): p.read_text() for p in files}


# --- /proc/cpuinfo (and the sysfs topology captured with it) ---------------------------------

# name: (what /proc/cpuinfo alone says, what the collector says with the host's sysfs too).
# Models, CPU counts and clocks agree with what util-linux's lscpu prints for the same dumps
# (tests/expected/lscpu/); sockets and cores are the kernel's own topology files.
CPUINFO = [
    # x86: model name, physical id/core id, cpu MHz
    ("x86_64-epyc_7451", ("AMD EPYC 7451 24-Core Processor", 2, 48, 96, 2894.224), None),
    ("x86_64-dell_e4310", ("Intel(R) Core(TM) i5 CPU M 560 @ 2.67GHz", 1, 2, 4, 1199.0), None),
    ("vmware_fpe", ("AMD Opteron(tm) Processor 6328", 2, 8, 16, 2386.98), None),
    # arm64: no model name, implementer and part; topology only in sysfs
    ("arm-A510-A710-A715-X3", ("ARM Cortex-A510", None, None, 8, None),
     ("ARM Cortex-A510", 3, 8, 8, None)),
    ("arm64-scaleway-thunderx", ("Cavium ThunderX 88XX", None, None, 6, None), None),
    # arm32 on an arm64 kernel: a generic model name and a part the table does not know
    ("android-galaxy-s7-us.armeabi", ("AArch64 Processor rev 2 (aarch64)", None, None, 4, None),
     None),
    # old arm32: "Processor" preamble, CPU lines, then Features/CPU part after a blank line
    ("armv7", ("ARM Cortex-A15", None, None, 2, None), ("ARM Cortex-A15", 1, 2, 2, None)),
    # old arm32, one CPU: no processor line and no blank line at all
    ("android-nexus-s", ("ARM Cortex-A8", None, None, None, None), None),
    # POWER: cpu and clock "3000.000000MHz"; the platform block after the CPUs
    ("ppc64-POWER7", ("POWER7 (architected), altivec supported", None, None, 16, 3000.0),
     ("POWER7 (architected), altivec supported", None, 4, 16, 3000.0)),
    # 32-bit PowerMac: the platform lines follow the CPU without a blank line
    ("ppc-qemu", ("740/750", None, None, 1, 266.0), ("740/750", None, 1, 1, 266.0)),
    # s390x: "processor N:" lines, no blank lines; newer kernels add "cpu number" blocks
    ("s390-lpar", ("IBM/S390 2817", None, None, 17, None), ("IBM/S390 2817", None, 17, 17, None)),
    ("s390-zvm", ("IBM/S390 2817", None, None, 4, None), ("IBM/S390 2817", None, 4, 4, None)),
    ("s390-lpar-drawer", ("IBM/S390 2964", None, None, 8, 5000.0),
     ("IBM/S390 2964", 2, 8, 8, 5000.0)),
    # MIPS: "system type" before the CPUs, "cpu model"
    ("mips-cavium-octeon-ubnt-e100", ("Cavium Octeon+ V0.1", None, None, 2, None), None),
    # LoongArch: "Model Name", "CPU MHz", package/core
    ("loongarch-loongson_3a5000_hv", ("Loongson-3A5000-HV", 1, 4, 4, 2500.0), None),
    ("loongarch-kvm_on_loongson_3c6000", ("Loongson-3A5000", 32, 32, 32, 2000.0), None),
    # RISC-V: uarch; a 64-core SG2042 numbers core_id 0-3 per cluster, so cores come from
    # thread_siblings_list
    ("rv64-visionfive2", ("sifive,u74-mc", None, None, 4, None), ("sifive,u74-mc", 1, 4, 4, None)),
    ("rv64-milkvpioneer", (None, None, None, 64, None), (None, 1, 64, 64, None)),
    # SPARC: no processor lines, "ncpus active", CpuNClkTck in hex Hz
    ("sparc64", ("TI UltraSparc II (BlackBird)", None, None, 6, 248.0),
     ("TI UltraSparc II (BlackBird)", None, 6, 6, 248.0)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "alone", "with_sysfs"), CPUINFO, ids=[c[0] for c in CPUINFO])
def test_cpuinfo_field_by_field(name, alone, with_sysfs, fake_source):
    files = host_tree(FIXTURES / "cpuinfo" / name)
    assert parse_cpuinfo(files["/proc/cpuinfo"]) == dict(zip(FIELDS, alone, strict=True))
    facts = CpuCollector(fake_source(files=files)).collect()
    assert facts == dict(zip(FIELDS, with_sysfs or alone, strict=True))


SQUEEZABLE = ["x86_64-epyc_7451", "ppc64-POWER7", "loongarch-kvm_on_loongson_3c6000"]


@pytest.mark.parametrize("name", SQUEEZABLE)
def test_cpuinfo_without_blank_lines_between_cpus_reads_the_same(name):
    captured = text("cpuinfo", name, "proc", "cpuinfo")
    squeezed = "\n".join(line for line in captured.splitlines() if line.strip())
    assert squeezed.count("\n") < captured.count("\n")
    assert parse_cpuinfo(squeezed) == parse_cpuinfo(captured)


def test_every_captured_cpuinfo_is_tested():
    assert {p.name for p in (FIXTURES / "cpuinfo").iterdir()} == {c[0] for c in CPUINFO}


# --- lsblk --pairs and --json of the same captured sysfs ------------------------------------


@pytest.mark.parametrize("name", ["simple-lvm", "simple-nvme", "multi-devs-bcachefs"])
@pytest.mark.parametrize("loops", [False, True])
def test_lsblk_pairs_read_as_the_json_of_the_same_host(name, loops):
    pairs = parse_lsblk_pairs(text("lsblk", f"{name}.pairs"), include_loop_and_ram=loops)
    assert pairs == parse_lsblk(text("lsblk", f"{name}.json"), include_loop_and_ram=loops)
    assert pairs


def test_lsblk_pairs_field_by_field():
    devices = {d["kname"]: d for d in parse_lsblk_pairs(text("lsblk", "multi-devs-bcachefs.pairs"))}
    assert devices["sda"] == {
        "name": "sda",
        "kname": "sda",
        "model": "KINGSTON_SH103S3240G",
        "serial": "KINGSTON_SH103S3240G_50026B724B09A1FF",
        "size_bytes": 240057409536,
        "type": "disk",
        "rotational": False,
        "wwn": "0x50026b724b09a1ff",
        "parent": None,
    }
    assert devices["sdb"]["rotational"] is True
    assert devices["sr0"]["type"] == "rom" and devices["sr0"]["size_bytes"] == 1073741312
    assert devices["nvme0n1p4"]["parent"] == "nvme0n1"
    assert devices["nvme0n1"]["wwn"] == "eui.00000000000000000026b7283b12b315"


def test_lsblk_pairs_padded_model_and_serial_are_stripped():
    nvme = next(
        d for d in parse_lsblk_pairs(text("lsblk", "simple-nvme.pairs")) if d["kname"] == "nvme0n1"
    )
    assert (nvme["model"], nvme["serial"]) == ("KINGSTON SKC1000240G", "50026B728203601D")


def test_lsblk_pairs_lvm_over_loops_is_listed_once_with_its_first_parent():
    devices = parse_lsblk_pairs(text("lsblk", "simple-lvm.pairs"), include_loop_and_ram=True)
    lvm = [d for d in devices if d["kname"] == "dm-0"]
    assert len(lvm) == 1 and lvm[0]["parent"] == "loop0" and lvm[0]["type"] == "lvm"
    assert "dm-0" not in {d["kname"] for d in parse_lsblk_pairs(text("lsblk", "simple-lvm.pairs"))}


def test_lsblk_pairs_escapes_and_missing_columns():
    # lsblk writes quotes and unprintable bytes as \xHH; an old lsblk may lack a column.
    line = 'NAME="sdz" KNAME="sdz" MODEL="Disk\\x22A\\x22\\x20\\xc3\\xa9" SIZE="1024" TYPE="disk"\n'
    (device,) = parse_lsblk_pairs(line)
    assert device["model"] == 'Disk"A" \u00e9'
    assert device["serial"] is None and device["wwn"] is None and device["parent"] is None


# --- ip addr (text, iproute2 3.10 of CentOS 7 and older) and ip -json --------------------------


def test_ip_addr_centos7_field_by_field():
    links = parse_ip_addr(text("ip_addr", "rex-ip.out_centos7"))
    assert links["eth0"] == {
        "mac": "00:1c:42:fe:5a:b5",
        "ipv4": ["10.211.55.171/24"],
        "ipv6": ["fec0::fea9:21c:42ff:fefe:5ab5/64", "fe80::21c:42ff:fefe:5ab5/64"],
        "mtu": 1500,
        "up": True,
    }
    assert links["lo"]["mac"] is None  # the all-zero loopback address is no MAC


def test_ip_addr_alias_label_is_its_own_entry_as_getifaddrs_gives_it():
    links = parse_ip_addr(text("ip_addr", "rex-ip.out_centos7_alias"))
    assert links["eth0"]["ipv4"] == ["192.168.112.198/24"]
    assert links["eth0:1"] == {
        "mac": None,
        "ipv4": ["1.2.3.4/32"],
        "ipv6": [],
        "mtu": None,
        "up": None,
        "speed_mbps": None,
    }


def test_ip_addr_secondary_address_and_old_iproute_without_lifetimes():
    links = parse_ip_addr(text("ip_addr", "rex-ip.out_issue_539"))
    assert links["eth0"]["ipv4"] == ["192.168.178.81/24", "192.168.99.37/24"]
    assert links["lo"]["mtu"] == 16436


def test_ip_addr_point_to_point_takes_the_peers_prefix():
    assert parse_ip_addr(text("ip_addr", "rex-ip.out3")) == {
        "ppp0": {"mac": None, "ipv4": ["123.117.251.17/32"], "ipv6": [], "mtu": 1454, "up": True}
    }


def test_ip_addr_down_link():
    assert parse_ip_addr(text("ip_addr", "rex-ip.out2"))["eth1"]["up"] is False


def test_ip_addr_up_without_carrier_is_not_up():
    head = "3: enp0s31f6: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc fq_codel state DOWN\n"
    assert parse_ip_addr(head)["enp0s31f6"]["up"] is False


def test_ip_text_and_json_of_one_host_agree():
    assert parse_ip_addr(text("ip_addr", "this_host.txt")) == parse_ip_json(
        text("ip_addr", "this_host.json")
    )


def test_ip_json_that_is_not_a_list_is_refused():
    with pytest.raises(ValueError):
        parse_ip_json('{"ifname": "eth0"}')


# --- dmidecode 2.x and 3.x ---------------------------------------------------------------------


def test_dmidecode_2_11_memory_field_by_field():
    assert parse_dmidecode_memory(text("dmidecode", "rex-dmidecode-2.11-parallels.txt")) == [
        {
            "locator": "DIMM #0",
            "size_bytes": 512 << 20,
            "type": "DRAM",
            "speed_mts": 667,  # dmidecode 2.x says MHz for what is a transfer rate
            "manufacturer": None,  # "Not Specified"
            "serial": None,
        }
    ]  # DIMM #1 and #2: "No Module Installed"


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("jc-centos-7.7-dmidecode-3.2-vmware.txt", 4 << 30),
        ("jc-ubuntu-18.04-dmidecode.txt", 2 << 30),
    ],
)
def test_dmidecode_3_memory_of_vmware_guests(name, size):
    (dimm,) = parse_dmidecode_memory(text("dmidecode", name))
    assert dimm == {
        "locator": "RAM slot #0",
        "size_bytes": size,
        "type": "DRAM",
        "speed_mts": None,  # "Unknown"
        "manufacturer": None,
        "serial": None,
    }


# --- os-release, /proc/meminfo, /sys/class/dmi/id, df -P --------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("jc-centos-7", ("centos", "CentOS Linux", "7", "CentOS Linux 7 (Core)")),
        ("jc-ubuntu", ("ubuntu", "Ubuntu", "18.04", "Ubuntu 18.04.5 LTS")),
        ("this_host", ("debian", "Debian GNU/Linux", "12", "Debian GNU/Linux 12 (bookworm)")),
    ],
)
def test_os_release(name, expected):
    fields = parse_os_release(text("os_release", name))
    assert (fields["ID"], fields["NAME"], fields["VERSION_ID"], fields["PRETTY_NAME"]) == expected


@pytest.mark.parametrize(
    ("name", "total", "swap", "huge_pages"),
    [("jc-linux-proc", 3997272 << 10, 3996668 << 10, 0), ("procfs", 15666184 << 10, 0, 0)],
)
def test_meminfo(name, total, swap, huge_pages):
    values = parse_meminfo(text("meminfo", name))
    assert (values["MemTotal"], values["SwapTotal"]) == (total, swap)
    assert values["HugePages_Total"] == huge_pages  # a count, not kB


def test_dmi_id_of_a_dell_poweredge(fake_source):
    files = {f"/sys/class/dmi/id/{p.name}": p.read_text() for p in (FIXTURES / "dmi_id" /
             "dell-poweredge-r6515").iterdir()}  # fmt: skip
    assert HardwareCollector(fake_source(files=files)).collect() == {
        "vendor": "Dell Inc.",
        "product": "PowerEdge R6515",
        "serial": "7N62AI2",
        "uuid": "83340ca8-cb49-4474-8c29-d2088ca84dd9",
        "bios_vendor": "Dell Inc.",
        "bios_version": "2.2.4",
        "bios_date": "04/12/2021",
        "chassis_type": "Rack Mount Chassis",
    }


def test_df_posix_in_bytes_and_kib_of_one_host_agree_within_a_kib():
    exact = parse_df(text("mounts_df", "this_host.df_P_a_B1"))
    kib = parse_df(text("mounts_df", "this_host.df_P_a_k"))
    assert set(exact) == set(kib) and "/" in exact
    for mountpoint, st in exact.items():
        assert st.f_frsize == 1 and kib[mountpoint].f_frsize == 1024
        assert abs(st.f_blocks - kib[mountpoint].f_blocks * 1024) < 1024, mountpoint


def test_df_of_centos_7_field_by_field():
    root = parse_df(text("mounts_df", "jc-centos-7.7.df"))["/"]
    assert vars(root) == {
        "f_frsize": 1024,  # "1K-blocks"
        "f_blocks": 17811456,
        "f_bfree": 17811456 - 1805580,
        "f_bavail": 16005876,
    }


# --- the agent's collectors fall back to the text forms --------------------------------------


def test_disks_collector_falls_back_to_pairs_when_json_is_not_json(fake_source):
    source = fake_source(
        commands={
            LSBLK: "lsblk: unknown option\n",
            LSBLK_PAIRS: text("lsblk", "simple-nvme.pairs"),
        }
    )
    assert DisksCollector(source).collect()["devices"] == parse_lsblk(
        text("lsblk", "simple-nvme.json")
    )


def test_disks_collector_falls_back_to_lsblk_pairs_without_json(fake_source):
    source = fake_source(commands={LSBLK_PAIRS: text("lsblk", "simple-nvme.pairs")})
    devices = DisksCollector(source).collect()["devices"]
    assert devices == parse_lsblk(text("lsblk", "simple-nvme.json"))
    assert source.ran[0][:2] == ("lsblk", "--json")  # JSON first, pairs only when it failed


def test_network_collector_falls_back_to_ip_addr_text_without_psutil_or_json(fake_source):
    source = fake_source(
        commands={IP_JSON: None, IP_TEXT: text("ip_addr", "rex-ip.out_centos7_alias")},
        files={
            "/sys/class/net/eth0/speed": "1000\n",
            "/sys/class/net/eth0/type": "1\n",
            "/sys/class/net/eth0/device/uevent": "DRIVER=virtio_net\n",
        },
    )
    interfaces = {i["name"]: i for i in NetworkCollector(source).collect()["interfaces"]}
    assert set(interfaces) == {"eth0", "eth0:1"}  # lo is never reported
    assert interfaces["eth0"] == {
        "name": "eth0",
        "mac": "52:54:00:f4:0d:74",
        "ipv4": ["192.168.112.198/24"],
        "ipv6": ["fe80::5054:ff:fef4:d74/64"],
        "speed_mbps": 1000,
        "mtu": 1500,
        "up": True,
        "kind": "physical",
        "bond": None,
    }
    assert interfaces["eth0:1"]["ipv4"] == ["1.2.3.4/32"] and interfaces["eth0:1"]["kind"] is None


def test_network_collector_uses_ip_json_when_present(fake_source):
    source = fake_source(commands={IP_JSON: text("ip_addr", "this_host.json")})
    names = [i["name"] for i in NetworkCollector(source).collect()["interfaces"]]
    assert names == ["eth0", "ifb0", "ifb1"]
    assert ("ip", "addr", "show") not in source.ran
