"""Tests for collectors.disks on lsblk JSON and /proc/mounts from servers, containers, this host."""

from pathlib import Path

from collectors.disks import LSBLK, DisksCollector, parse_lsblk, parse_proc_mounts, real_filesystems

DATA = Path(__file__).parent / "data" / "disks"


def data(name: str) -> str:
    return (DATA / name).read_text()


def by_kname(devices: list[dict]) -> dict[str, dict]:
    return {d["kname"]: d for d in devices}


# --- lsblk -------------------------------------------------------------------------------------


def test_lsblk_of_this_host_excludes_zram():
    assert parse_lsblk(data("lsblk_this_host.json")) == [
        {
            "name": "vda",
            "kname": "vda",
            "model": None,
            "serial": None,
            "size_bytes": 274877906944,
            "type": "disk",
            "rotational": True,
            "wwn": None,
            "parent": None,
        }
    ]


def test_raid1_members_partitions_and_lvm_are_flattened_with_parents():
    devices = by_kname(parse_lsblk(data("lsblk_server_raid1_lvm.json")))
    assert devices["sda"]["model"] == "SAMSUNG MZ7LH480HAHQ-00005"
    assert devices["sda"]["serial"] == "S45PNA0M512345"
    assert devices["sda"]["rotational"] is False
    assert devices["sda1"]["parent"] == "sda"
    assert devices["md0"]["type"] == "raid1"
    assert devices["md1"]["size_bytes"] == 478891638784
    assert devices["dm-0"]["name"] == "vg0-root"
    assert devices["dm-0"]["type"] == "lvm"
    assert devices["dm-0"]["parent"] == "md1"
    assert devices["sdc"]["rotational"] is True
    assert devices["sdc"]["wwn"] == "0x5000c500a1b2c3d4"
    assert devices["sr0"]["type"] == "rom"
    assert devices["nvme0n1p1"]["parent"] == "nvme0n1"


def test_raid_shown_under_each_member_is_listed_once():
    knames = [d["kname"] for d in parse_lsblk(data("lsblk_server_raid1_lvm.json"))]
    assert len(knames) == len(set(knames))
    assert knames.count("md0") == 1 and knames.count("dm-0") == 1
    assert by_kname(parse_lsblk(data("lsblk_server_raid1_lvm.json")))["md0"]["parent"] == "sda1"


def test_loop_devices_are_excluded_by_default_and_kept_on_request():
    text = data("lsblk_server_raid1_lvm.json")
    assert "loop0" not in by_kname(parse_lsblk(text))
    assert by_kname(parse_lsblk(text, include_loop_and_ram=True))["loop0"]["type"] == "loop"
    assert "zram0" in by_kname(parse_lsblk(data("lsblk_this_host.json"), include_loop_and_ram=True))


def test_old_lsblk_string_values_become_ints_and_bools():
    devices = by_kname(parse_lsblk(data("lsblk_ubuntu1804_util-linux-2.31_strings.json")))
    assert set(devices) == {"sda", "sda1", "sda2", "sdb", "sdb1", "sr0"}  # snaps' loops dropped
    assert devices["sda"]["size_bytes"] == 480103981056
    assert devices["sda"]["rotational"] is False
    assert devices["sdb"]["rotational"] is True
    assert devices["sr0"]["model"] == "DVD-ROM"  # padded to 16 characters by old lsblk


# --- mounts ------------------------------------------------------------------------------------


def test_parse_proc_mounts_undoes_octal_escapes():
    mounts = parse_proc_mounts(data("proc_mounts_server"))
    backup = next(m for m in mounts if m["device"] == "/dev/sdc")
    assert backup == {
        "device": "/dev/sdc",
        "mountpoint": "/srv/backup copies",
        "fstype": "xfs",
        "options": "rw,relatime,attr2,inode64,logbufs=8,logbsize=32k,noquota",
    }


def test_real_filesystems_of_a_server_skip_pseudo_filesystems_and_snaps():
    kept = real_filesystems(parse_proc_mounts(data("proc_mounts_server")))
    assert [(m["mountpoint"], m["fstype"]) for m in kept] == [
        ("/", "ext4"),
        ("/boot", "ext4"),
        ("/boot/efi", "vfat"),
        ("/var", "ext4"),
        ("/srv/backup copies", "xfs"),
        ("/home", "nfs4"),
        ("/tank", "zfs"),
        ("/tank/scratch", "zfs"),
    ]


def test_shadowed_mount_is_not_reported():
    # /mnt/old: xfs, then a tmpfs mounted over it. Only the tmpfs is visible, and it is skipped.
    kept = real_filesystems(parse_proc_mounts(data("proc_mounts_server")))
    assert "/mnt/old" not in [m["mountpoint"] for m in kept]


def test_container_reports_its_overlay_root_and_volumes_not_bind_mounted_files():
    kept = real_filesystems(parse_proc_mounts(data("proc_mounts_docker_container")))
    assert [(m["mountpoint"], m["device"], m["fstype"]) for m in kept] == [
        ("/", "overlay", "overlay"),
        ("/data", "/dev/nvme0n1p2", "ext4"),
    ]


def test_this_hosts_mounts_keep_only_the_root_filesystem():
    kept = real_filesystems(parse_proc_mounts(data("proc_mounts_this_host")))
    assert [(m["mountpoint"], m["device"], m["fstype"]) for m in kept] == [
        ("/", "/dev/vda", "ext4")
    ]


# --- the collector -----------------------------------------------------------------------------


def test_collector_sizes_mounts_like_df(fake_source, captured):
    source = fake_source(
        files={"/proc/mounts": data("proc_mounts_docker_container")},
        statvfs={
            # 100 GiB, 60 GiB free of which 55 GiB for users (5 GiB root reserve).
            "/": captured.statvfs(26214400, 15728640, 14417920),
        },
    )
    facts = DisksCollector(source).collect()
    assert facts["devices"] == []  # no lsblk in the container
    assert facts["mounts"] == [
        {
            "mountpoint": "/",
            "device": "overlay",
            "fstype": "overlay",
            "size_bytes": 100 << 30,
            "used_bytes": 40 << 30,
            "free_bytes": 55 << 30,
            "used_pct": 42.1,  # 40 / (40 + 55), as df shows it
        },
        {
            "mountpoint": "/data",
            "device": "/dev/nvme0n1p2",
            "fstype": "ext4",
            "size_bytes": None,  # statvfs failed or timed out
            "used_bytes": None,
            "free_bytes": None,
            "used_pct": None,
        },
    ]


def test_collector_runs_lsblk_as_an_argv_with_bytes_and_json(fake_source):
    source = fake_source(
        files={"/proc/mounts": data("proc_mounts_server")},
        commands={LSBLK: data("lsblk_server_raid1_lvm.json")},
    )
    facts = DisksCollector(source).collect()
    assert source.ran == [
        (
            "lsblk",
            "--json",
            "--bytes",
            "-o",
            "NAME,KNAME,MODEL,SERIAL,SIZE,TYPE,ROTA,WWN,PKNAME",
        )
    ]
    assert len(facts["devices"]) == 15
    assert len(facts["mounts"]) == 8


def test_empty_filesystem_has_no_used_pct(fake_source, captured):
    source = fake_source(
        files={"/proc/mounts": "/dev/sdz1 /empty ext4 rw 0 0\n"},
        statvfs={"/empty": captured.statvfs(0, 0, 0)},
    )
    mount = DisksCollector(source).collect()["mounts"][0]
    assert (mount["size_bytes"], mount["used_pct"]) == (0, None)
