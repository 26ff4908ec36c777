from __future__ import annotations

from pyti.console import MAX_LINE, Console


def test_console_keeps_head_and_tail_of_a_flood_and_still_sees_a_late_panic() -> None:
    console = Console(head=8, tail=40)
    console.feed(b"BOOTING\n")
    for _ in range(1000):
        console.feed(b"spam spam spam spam\n")
    console.feed(b"Kernel panic - not syncing: x\n")
    assert console.log.total == 8 + 20 * 1000 + 30
    text = console.text()
    assert text.startswith("BOOTING\n\n[... 19990 bytes omitted ...]\n")
    assert text.endswith("Kernel panic - not syncing: x\n")
    assert len(text) < 200
    assert console.verdicts.panic_line == "Kernel panic - not syncing: x"


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


def test_a_panic_of_the_oom_killer_counts_as_an_oom_line_too() -> None:
    console = Console()
    line = "Kernel panic - not syncing: Out of memory and no killable processes..."
    console.feed(line.encode() + b"\n")
    assert console.verdicts.panic_line == line
    assert console.verdicts.oom_lines == [line]


def test_an_ordinary_panic_is_not_an_oom() -> None:
    console = Console()
    console.feed(b"Kernel panic - not syncing: Attempted to kill init!\n")
    assert console.verdicts.oom_lines == []


def test_the_snapshot_marker_counts_only_as_a_whole_line_even_split_across_reads() -> None:
    console = Console()
    console.feed(b"echo pyti-agent: ready for Hello? no\n")
    assert not console.verdicts.marker_seen
    console.feed(b"boot...\r\npyti-agent: ready ")
    assert not console.verdicts.marker_seen
    console.feed(b"for Hello\r\n")
    assert console.verdicts.marker_seen
