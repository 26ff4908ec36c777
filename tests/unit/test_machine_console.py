from __future__ import annotations

from pyti.console import MAX_LINE, Console, HeadTail


def test_head_tail_keeps_everything_under_the_cap() -> None:
    log = HeadTail(head=10, tail=10)
    log.feed(b"0123456789abc")
    assert log.getvalue() == b"0123456789abc"
    assert log.dropped == 0


def test_head_tail_drops_the_middle_and_says_how_much() -> None:
    log = HeadTail(head=4, tail=4)
    for chunk in (b"HEAD", b"x" * 1000, b"y" * 1000, b"TAIL"):
        log.feed(chunk)
    assert log.total == 2008
    assert log.dropped == 2000
    assert log.getvalue() == b"HEAD\n[... pyti dropped 2000 bytes of console output ...]\nTAIL"


def test_head_tail_memory_stays_bounded_under_a_flood() -> None:
    log = HeadTail(head=100, tail=100)
    for _ in range(10_000):
        log.feed(b"z" * 97)
    assert len(log._tail) <= 2 * 100 + 97
    assert log.getvalue().endswith(b"z" * 100)


def test_panic_line_found_even_when_split_across_reads() -> None:
    console = Console()
    console.feed(b"[ 1.0] booting\r\n[ 2.0] Kernel pa")
    assert console.verdicts.panic_line is None
    console.feed(b"nic - not syncing: VFS: Unable to mount root\r\n")
    assert (
        console.verdicts.panic_line
        == "[ 2.0] Kernel panic - not syncing: VFS: Unable to mount root"
    )


def test_panic_on_the_last_line_without_newline_is_found_at_finish() -> None:
    console = Console()
    console.feed(b"Kernel panic - not syncing: Attempted to kill init!")
    assert console.verdicts.panic_line is None
    console.finish()
    assert console.verdicts.panic_line is not None


def test_oom_lines_are_collected_and_capped() -> None:
    console = Console()
    console.feed(b"python3 invoked oom-killer: gfp_mask=0x140cca\n" * 50)
    console.feed(b"Out of memory: Killed process 77 (python3)\n")
    assert console.verdicts.oom_lines[0].startswith("python3 invoked oom-killer")
    assert len(console.verdicts.oom_lines) == 20
    assert console.verdicts.panic_line is None


def test_a_huge_line_is_scanned_by_its_start_only() -> None:
    console = Console()
    console.feed(b"a" * (MAX_LINE * 10) + b"Kernel panic - not syncing\n")
    assert console.verdicts.panic_line is None
    console.feed(b"Kernel panic - not syncing: x\n")
    assert console.verdicts.panic_line == "Kernel panic - not syncing: x"


def test_text_decodes_garbage_and_drops_carriage_returns() -> None:
    console = Console()
    console.feed(b"ok\r\n\xff\xfe\n")
    assert console.text() == "ok\n\ufffd\ufffd\n"
    assert console.tail_lines(1) == ["\ufffd\ufffd"]
