"""Grouping a job's hosts as they are read at scale: pure functions on the API's dicts."""

import ipaddress

from client import grouping
from client.grouping import Group, group, ip_order, ip_ranges, summary_line
from client.report import not_answering_lines


def test_addresses_sort_as_numbers_then_ipv6_then_names():
    ips = ["web01", "::1", "127.0.2.100", "127.0.2.10", "127.0.2.1", "127.0.10.1", "127.0.2.2"]
    assert sorted(ips, key=ip_order) == ["127.0.2.1", "127.0.2.2", "127.0.2.10", "127.0.2.100",
                                         "127.0.10.1", "::1", "web01"]  # fmt: skip


def test_consecutive_last_octets_collapse_into_ranges():
    ips = ["127.0.2.1", "127.0.1.3", "127.0.1.7", "127.0.1.1", "127.0.1.2", "127.0.1.2"]
    assert ip_ranges(ips) == "127.0.1.1-3, 127.0.1.7, 127.0.2.1"


def test_ranges_do_not_cross_a_24_and_others_are_listed_as_they_are():
    ips = ["127.0.1.255", "127.0.2.0", "127.0.2.1", "::2", "::1", "db"]
    assert ip_ranges(ips) == "127.0.1.255, 127.0.2.0-1, ::1, ::2, db"
    assert ip_ranges([]) == ""


def _row(ip, state="ok", exit_code=0, stdout="", **more):
    return {"ip": ip, "state": state, "exit_code": exit_code, "stdout": stdout, **more}


def test_alike_hosts_are_one_group_and_the_odd_ones_come_first():
    rows = [_row(f"127.0.1.{n}", stdout="same\n") for n in range(1, 11)]
    rows += [_row("127.0.1.20", "failed", 2, stderr="no such file\n"),
             _row("127.0.1.21", "failed", 2, stderr="no such file\n"),
             _row("127.0.1.30", "failed", 1)]  # fmt: skip
    groups = group(reversed(rows))
    assert [(g.state, g.exit_code, len(g.hosts)) for g in groups] == [
        ("failed", 1, 1), ("failed", 2, 2), ("ok", 0, 10)]  # fmt: skip
    assert groups[1].output == "[stderr]\nno such file\n"
    assert groups[2].hosts[:3] == ("127.0.1.1", "127.0.1.2", "127.0.1.3")  # numeric order
    assert groups[2].label == "10 hosts: 127.0.1.1-10"
    assert groups[0].label == "1 host: 127.0.1.30"


def test_same_output_different_exit_code_or_state_are_apart():
    rows = [_row("127.0.1.1"), _row("127.0.1.2", exit_code=1), _row("127.0.1.3", "timeout")]
    assert len(group(rows)) == 3


def test_ties_go_by_state_then_first_address():
    rows = [_row("127.0.1.9", "failed", 1), _row("127.0.1.5", "ok"), _row("127.0.1.2", "ok", 3)]
    assert [g.hosts[0] for g in group(rows)] == ["127.0.1.2", "127.0.1.5", "127.0.1.9"]
    assert [g.state for g in group(rows)] == ["ok", "ok", "failed"]


def test_an_error_naming_each_host_groups_with_the_address_marked():
    # The server's unreachable verdict names the host; 290 of them are still one group.
    rows = [{"ip": f"127.0.3.{n}", "state": "unreachable", "exit_code": None,
             "error": f"no agent took it: is the agent for 127.0.3.{n} running?"}
            for n in range(1, 6)]  # fmt: skip
    rows.append(
        _row(
            "127.0.3.10",
            "unreachable",
            None,
            error="no agent took it: is the agent for 127.0.3.10 running?",
        )
    )
    (only,) = group(rows)
    assert only.hosts == ("127.0.3.1", "127.0.3.2", "127.0.3.3", "127.0.3.4", "127.0.3.5",
                          "127.0.3.10")  # fmt: skip
    assert only.output == "[unreachable] no agent took it: is the agent for <host> running?\n"


def test_an_address_is_not_marked_inside_a_longer_one():
    rows = [_row("127.0.1.1", stdout="peer 127.0.1.10 and 127.0.1.1.\n"),
            _row("127.0.1.2", stdout="peer 127.0.1.10 and 127.0.1.2.\n")]  # fmt: skip
    (only,) = group(rows)
    assert only.output == "peer 127.0.1.10 and <host>.\n"
    # A single host keeps its own words.
    (alone,) = group(rows[:1])
    assert alone.output == "peer 127.0.1.10 and 127.0.1.1.\n"


def test_rows_as_the_api_gives_them():
    # "host" for the address, streams as head/tail dicts, null where output is hidden.
    stream = {"head": "a" * 4, "tail": "z" * 4, "bytes": 100, "truncated": True}
    rows = [{"host": "127.0.1.2", "state": "ok", "exit_code": 0, "stdout": stream,
             "stderr": None}, {"host": "127.0.1.1", "state": "ok"}]  # fmt: skip
    groups = group(rows)
    assert groups == [
        Group("ok", None, "", ("127.0.1.1",)),
        Group("ok", 0, "aaaa\n[... output truncated: 100 bytes in all, 92 bytes in the middle "
              "not kept ...]\nzzzz\n", ("127.0.1.2",)),
    ]  # fmt: skip


def test_output_escapes_control_characters():
    (only,) = group([_row("127.0.1.1", stdout="\x1b]52;c;evil\x07\n")])
    assert only.output == "\\x1b]52;c;evil\\x07\n"


def test_the_summary_tallies_in_state_order():
    assert summary_line({"unreachable": 297, "ok": 3, "failed": 0}) == "3 ok, 297 unreachable"
    assert summary_line({"weird": 1, "error": 2}) == "2 error, 1 weird"
    assert summary_line({}) == "no hosts"
    assert grouping.counts_of([_row("a"), _row("b", "failed")]) == {"ok": 1, "failed": 1}


def test_dispatch_warns_of_the_targets_that_will_not_answer_by_kind():
    reach = {"skipped": [], "offline": ["127.0.1.5"],
             "never_seen": ["127.0.1.52", "127.0.1.50", "127.0.1.51"]}  # fmt: skip
    assert not_answering_lines(reach, 30) == [
        "warning: 1 target(s) offline, they will end unreachable after the reach timeout "
        "(30 s; --online-only leaves them out): 127.0.1.5",
        "warning: 3 target(s) never seen, they will end unreachable after the reach timeout "
        "(30 s; --online-only leaves them out): 127.0.1.50-52",
    ]
    skipped = not_answering_lines({"skipped": ["127.0.1.5"], "offline": [], "never_seen": []})
    assert skipped == ["skipped 1 target(s) not online (--online-only): 127.0.1.5"]
    assert not_answering_lines({"skipped": [], "offline": [], "never_seen": []}) == []


def test_dotted_addresses_sort_as_ipaddress_reads_them_and_the_rest_as_before():
    # The fast path for dotted IPv4 must agree with ipaddress on every string, the ones it
    # refuses (leading zeros, 256, a trailing newline, other digits) included.
    def reference(ip):
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return (9, 0, ip)
        return (address.version, int(address), "")

    odd = ["0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3.04", "1.2.3",
           "1.2.3.4.5", "1.2.3.4\n", " 1.2.3.4", "\u0661.2.3.4", "::1", "::ffff:1.2.3.4", "",
           "node01"]  # fmt: skip
    every_octet = [f"{n}.{n}.{n}.{n}" for n in range(300)] + [f"10.0.{n:02d}.1" for n in range(10)]
    for ip in odd + every_octet:
        assert ip_order(ip) == reference(ip), ip
