"""Following a job on a terminal (cmdb.jobs.render): each line once, from chunks or the result."""

import io

from rich.console import Console

from cmdb.jobs.render import Follow


def follow():
    out = io.StringIO()
    return Follow(Console(file=out, width=200, color_system=None), total=2), out


def chunk(at: int, text: str, task="t1", host="10.0.0.1", stream="stdout") -> dict:
    return {"type": "output", "task": task, "host": host, "elapsed": 1.0,
            f"{stream}_at": at, stream: text}  # fmt: skip


def task(state="ok", stdout="", truncated=False, tail="", total=None, **more) -> dict:
    body = stdout.encode()
    return {"ip": "10.0.0.1", "state": state, "exit_code": 0, "duration": 1.5, "error": "",
            "stdout": {"head": stdout, "tail": tail, "truncated": truncated,
                       "bytes": total if total is not None else len(body)},
            "stderr": {"head": "", "tail": "", "bytes": 0, "truncated": False}, **more}  # fmt: skip


def test_what_chunks_showed_is_not_shown_again_from_the_result():
    view, out = follow()
    view.output(chunk(0, "one\ntw"))
    view.output(chunk(6, "o\n"))
    view.finished("t1", task(stdout="one\ntwo\nthree\n"))
    lines = out.getvalue().splitlines()
    assert [line.split("| ")[1] for line in lines if "| " in line] == ["one", "two", "three"]
    assert "10.0.0.1 ok, exit 0, 1.50 s" in out.getvalue()


def test_skipped_output_is_said_and_control_characters_are_not_sent():
    view, out = follow()
    view.output(chunk(0, "a\n"))
    view.output(chunk(100, "\x1b[2Jz\n"))
    text = out.getvalue()
    assert "[... 98 bytes not shown ...]" in text
    assert "\x1b" not in text and "\\x1b[2Jz" in text


def test_a_task_shown_from_its_result_ignores_later_chunks_and_counts_failures():
    view, out = follow()
    view.finished("t1", task(state="failed", stdout="x\n", exit_code=1))
    view.output(chunk(0, "x\n"))
    assert out.getvalue().count("| x") == 1
    assert not view.ok
    assert "1/2 hosts finished, 0 ok, 1 not ok" in view.summary().plain


def test_a_job_over_its_live_budget_says_so_once():
    view, out = follow()
    view.truncated(4 << 20)
    view.truncated(4 << 20)
    assert out.getvalue().count("live output stopped") == 1, out.getvalue()
    assert "4,194,304 bytes" in out.getvalue()


def test_a_host_label_cannot_drive_the_terminal():
    view, out = follow()
    view.output({**chunk(0, "hi\n"), "host": "\x1b[2Jevil"})
    view.output({"type": "output"})  # malformed: no task, no text
    assert "\x1b" not in out.getvalue() and "\\x1b[2Jevil" in out.getvalue(), out.getvalue()


def test_a_line_without_end_is_shown_in_pieces_not_held_whole():
    from cmdb.jobs import render as live

    view, out = follow()
    for i in range(100):  # 100 chunks of 1 KiB, no newline: 400 KiB held before
        view.output(chunk(i * 1024, "x" * 1024))
    host = view.hosts["t1"]
    assert len(host.partial["stdout"]) <= live.PARTIAL_BYTES
    shown = sum(line.count("x") for line in out.getvalue().splitlines())
    assert shown + len(host.partial["stdout"]) == 100 * 1024
