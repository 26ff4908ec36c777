"""Messages: records (frozen, keyword-only), validation, wire round trips (also under old cbor2)."""

from __future__ import annotations

import copy
import math
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyti.protocol import messages as m
from pyti.protocol.codec import decode_body, encode

text = st.text(max_size=40)
short = st.text(max_size=m.MAX_SHORT)
task = st.sampled_from(sorted(m.TASK_NAMES))
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
duration = st.floats(min_value=0.0, max_value=m.MAX_DURATION, allow_nan=False)
small_bytes = st.binary(max_size=300)
str_tuple = st.lists(text, max_size=5).map(tuple)

MESSAGES: dict[type[m.Message], st.SearchStrategy[m.Message]] = {
    m.Hello: st.builds(
        m.Hello,
        protocol_version=st.integers(0, m.MAX_INT),
        agent_version=short,
        python_version=short,
        image_id=short,
        boot_id=short,
    ),
    m.Start: st.builds(
        m.Start,
        run_id=st.text(min_size=1, max_size=m.MAX_SHORT),
        tasks=st.lists(task, unique=True, max_size=4).map(tuple),
        test_args=str_tuple,
    ),
    m.Cancel: st.builds(m.Cancel, reason=text),
    m.TaskStarted: st.builds(m.TaskStarted, task=task),
    m.Metadata: st.builds(m.Metadata, name=text, version=text, metadata=small_bytes),
    m.TestResult: st.builds(
        m.TestResult,
        nodeid=st.text(min_size=1, max_size=80),
        outcome=st.sampled_from(sorted(m.TEST_OUTCOMES)),
        duration=duration,
        report=text,
    ),
    m.Output: st.builds(
        m.Output, task=task, stream=st.sampled_from(["stdout", "stderr"]), data=small_bytes
    ),
    m.Finding: st.builds(m.Finding, kind=token, detail=text, task=st.just("") | task),
    m.TaskFinished: st.builds(
        m.TaskFinished,
        task=task,
        outcome=st.sampled_from(sorted(m.TASK_OUTCOMES)),
        exit_code=st.none() | st.integers(-(1 << 31), (1 << 31) - 1),
        duration=duration,
        counts=st.dictionaries(token, st.integers(0, m.MAX_INT), max_size=5),
    ),
    m.Heartbeat: st.builds(m.Heartbeat, seq=st.integers(0, m.MAX_INT)),
    m.Goodbye: st.builds(m.Goodbye, reason=text),
}
any_message = st.one_of(*MESSAGES.values())


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(m.MESSAGE_TYPES.values())


def test_wire_names_are_unique_and_short() -> None:
    names = [cls.TYPE for cls in m.MESSAGE_TYPES.values()]
    assert len(set(names)) == len(names)
    assert all(0 < len(name) <= 16 for name in names)


@given(any_message)
def test_every_message_round_trips_through_a_frame(message: m.Message) -> None:
    frame = encode(message)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert decode_body(frame[4:]) == message


def test_bytes_stay_bytes_and_tuples_stay_tuples() -> None:
    start = decode_body(encode(m.Start(run_id="r", tasks=["install"], test_args=["-x"]))[4:])
    assert isinstance(start, m.Start)
    assert start.tasks == ("install",)
    assert start.test_args == ("-x",)
    out = decode_body(encode(m.Output(task="test", stream="stdout", data=b"\xff\x00"))[4:])
    assert isinstance(out, m.Output)
    assert out.data == b"\xff\x00"


def test_unknown_fields_are_ignored() -> None:
    wire = {"type": "heartbeat", "seq": 3, "from_the_future": [1, 2]}
    assert m.from_wire(wire) == m.Heartbeat(seq=3)


def test_unknown_type_is_an_unknown_message_with_its_size() -> None:
    assert m.from_wire({"type": "telemetry", "x": 1}, 12) == m.UnknownMessage(
        type="telemetry", size=12
    )


@pytest.mark.parametrize(
    "wire",
    [
        [],
        {"seq": 1},
        {"type": 7},
        {"type": ""},
        {"type": "x" * (m.MAX_SHORT + 1)},
        {"type": "heartbeat"},
        {"type": "heartbeat", "seq": -1},
        {"type": "heartbeat", "seq": True},
        {"type": "heartbeat", "seq": 1.0},
        {"type": "test-result", "nodeid": "a", "outcome": "passed", "duration": "1"},
        {"type": "output", "task": "test", "stream": "stdout", "data": "text, not bytes"},
        {"type": "task-finished", "task": "test", "outcome": "passed", "exit_code": 0,
         "duration": 1.0, "counts": [1]},
    ],
)  # fmt: skip
def test_malformed_wire_maps_are_invalid(wire: object) -> None:
    with pytest.raises(m.InvalidMessage):
        m.from_wire(wire)


def test_invalid_message_is_a_protocol_error_and_a_value_error() -> None:
    with pytest.raises(m.ProtocolError):
        m.Heartbeat(seq=-1)
    with pytest.raises(ValueError):
        m.Goodbye(reason="x" * (m.MAX_REASON + 1))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: m.Hello(protocol_version=1, agent_version="a" * 129, python_version="",
                         image_id="", boot_id=""), "agent_version"),
        (lambda: m.Start(run_id="", tasks=()), "run_id"),
        (lambda: m.Start(run_id="r", tasks=("test", "test")), "repeat"),
        (lambda: m.Start(run_id="r", tasks=("deploy",)), "task"),
        (lambda: m.Start(run_id="r", tasks=(), test_args=("a",) * (m.MAX_ARGS + 1)), "items"),
        (lambda: m.Start(run_id="r", tasks=(), clock=-1.0), "clock"),
        (lambda: m.Start(run_id="r", tasks=(), clock=math.nan), "clock"),
        (lambda: m.Start(run_id="r", tasks=(), clock="now"), "clock"),
        (lambda: m.Start(run_id="r", tasks=(), entropy="x"), "entropy"),
        (lambda: m.Start(run_id="r", tasks=(), entropy=b"x" * (m.MAX_ENTROPY + 1)), "entropy"),
        (lambda: m.TestResult(nodeid="", outcome="passed", duration=0.0), "nodeid"),
        (lambda: m.TestResult(nodeid="a", outcome="ok", duration=0.0), "outcome"),
        (lambda: m.TestResult(nodeid="a", outcome="passed", duration=-1.0), "duration"),
        (lambda: m.TestResult(nodeid="a", outcome="passed", duration=math.nan), "duration"),
        (lambda: m.TestResult(nodeid="a", outcome="passed", duration=math.inf), "duration"),
        (lambda: m.TestResult(nodeid="a", outcome="passed", duration=0.0,
                              report="r" * (m.MAX_REPORT + 1)), "report"),
        (lambda: m.Output(task="test", stream="stdin", data=b""), "stream"),
        (lambda: m.Output(task="test", stream="stdout", data=b"x" * (m.MAX_CHUNK + 1)), "data"),
        (lambda: m.Finding(kind="Network!", detail=""), "kind"),
        (lambda: m.TaskFinished(task="test", outcome="passed", exit_code=1 << 40,
                                duration=0.0), "exit_code"),
        (lambda: m.TaskFinished(task="test", outcome="passed", exit_code=0, duration=0.0,
                                counts={f"k{i}": 1 for i in range(m.MAX_COUNTS + 1)}), "counts"),
        (lambda: m.Metadata(name="n", version="v", metadata=b"x" * (m.MAX_METADATA + 1)),
         "metadata"),
    ],
)  # fmt: skip
def test_constructors_refuse_bad_fields(build: object, message: str) -> None:
    assert callable(build)
    with pytest.raises(m.InvalidMessage, match=message):
        build()


def test_limits_are_inclusive_at_the_edge() -> None:
    m.TestResult(nodeid="n" * m.MAX_NODEID, outcome="passed", duration=m.MAX_DURATION)
    m.Output(task="test", stream="stderr", data=b"x" * m.MAX_CHUNK)
    m.Heartbeat(seq=m.MAX_INT)
    with pytest.raises(m.InvalidMessage):
        m.Heartbeat(seq=m.MAX_INT + 1)


def test_integer_duration_becomes_a_float() -> None:
    result = m.TestResult(nodeid="a", outcome="passed", duration=0)
    assert type(result.duration) is float


def test_task_finished_counts_are_read_only() -> None:
    counts = {"passed": 2}
    finished = m.TaskFinished(task="test", outcome="passed", exit_code=0, duration=1.0,
                              counts=counts)  # fmt: skip
    counts["failed"] = 1
    assert dict(finished.counts) == {"passed": 2}
    with pytest.raises(TypeError):
        finished.counts["failed"] = 1  # type: ignore[index]


@given(st.text(max_size=300), st.integers(0, 200))
def test_truncate_text_keeps_head_and_tail_within_the_limit(text_: str, limit: int) -> None:
    cut = m.truncate_text(text_, limit)
    assert len(cut) <= limit
    if len(text_) <= limit:
        assert cut == text_
        return
    match = re.search(r"\n\[\.\.\. (\d+) characters omitted \.\.\.\]\n", cut)
    if match is None:  # limit too small for the note
        assert cut == text_[:limit]
        return
    head, tail = cut[: match.start()], cut[match.end() :]
    assert text_.startswith(head)
    assert text_.endswith(tail)
    assert len(head) + int(match.group(1)) + len(tail) == len(text_)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: m.TestResult(nodeid=s, outcome="passed", duration=0.0),
        lambda s: m.TestResult(nodeid="a", outcome="passed", duration=0.0, report=s),
        lambda s: m.Start(run_id="r", tasks=(), test_args=(s,)),
        lambda s: m.Finding(kind="network", detail=s),
        lambda s: m.Metadata(name=s, version="1", metadata=b""),
    ],
)
def test_lone_surrogates_are_refused_at_construction(build: object) -> None:
    assert callable(build)
    with pytest.raises(m.InvalidMessage, match="surrogates"):
        build("t\udcff.py::test")


# st.text never yields lone surrogates; build strings that have them on purpose.
with_surrogates = st.lists(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=30).map(
    "".join
)


@given(with_surrogates)
def test_clean_text_makes_any_string_sendable(raw: str) -> None:
    cleaned = m.clean_text(raw)
    cleaned.encode("utf-8")
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in raw):
        assert cleaned == raw
    result = m.TestResult(nodeid="n" + cleaned, outcome="passed", duration=0.0, report=cleaned)
    assert decode_body(encode(result)[4:]) == result


def test_non_ascii_text_is_fine() -> None:
    result = m.TestResult(nodeid="tëst.py::test_ü[日本]", outcome="failed", duration=1.0,
                          report="assert 'é' == 'e'")  # fmt: skip
    assert decode_body(encode(result)[4:]) == result


# The record mechanism (frozen, keyword-only, slotted classes without dataclasses).

HEARTBEAT = m.Heartbeat(seq=3)
RESULT = m.TestResult(nodeid="t.py::test", outcome="failed", duration=0.5, report="boom")


@pytest.mark.parametrize("message", [HEARTBEAT, RESULT, m.UnknownMessage(type="x", size=1)])
def test_records_are_frozen(message: object) -> None:
    with pytest.raises(m.FrozenInstanceError, match="cannot assign to field 'seq'"):
        message.seq = 4  # type: ignore[attr-defined]
    with pytest.raises(m.FrozenInstanceError, match="cannot delete field 'seq'"):
        del message.seq  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):  # FrozenInstanceError is one, as in dataclasses
        message.new_attribute = 1  # type: ignore[attr-defined]


def test_records_have_slots_and_no_dict() -> None:
    assert vars(m.TestResult)["__slots__"] == ("nodeid", "outcome", "duration", "report")
    assert vars(m.Message)["__slots__"] == ()
    for message in (HEARTBEAT, RESULT, m.Goodbye(), m.UnknownMessage(type="x", size=1)):
        assert not hasattr(message, "__dict__")


def test_fields_are_inherited_then_declared_in_order() -> None:
    assert m.TestResult._fields == ("nodeid", "outcome", "duration", "report")
    assert m.TaskFinished._fields == ("task", "outcome", "exit_code", "duration", "counts")
    assert m.UnknownMessage._fields == ("type", "size")
    assert m.Message._fields == ()
    for cls in m.MESSAGE_TYPES.values():
        assert cls._fields == tuple(cls.__annotations__)
    assert list(m.to_wire(RESULT)) == ["type", "nodeid", "outcome", "duration", "report"]


def test_defaults_fill_omitted_fields() -> None:
    assert m.Goodbye().reason == "done"
    start = m.Start(run_id="r", tasks=())
    assert (start.test_args, start.clock, start.entropy) == ((), 0.0, b"")
    assert m.Finding(kind="network", detail="").task == ""
    assert m.TestResult(nodeid="a", outcome="passed", duration=0.0).report == ""
    finished = m.TaskFinished(task="test", outcome="passed", exit_code=0, duration=0.0)
    assert type(finished.counts) is types.MappingProxyType
    assert finished.counts == {}


def test_equal_records_have_the_same_type_and_fields_and_hash() -> None:
    assert m.Heartbeat(seq=3) == HEARTBEAT
    assert hash(m.Heartbeat(seq=3)) == hash(HEARTBEAT) == hash((3,))
    assert m.Heartbeat(seq=4) != HEARTBEAT
    other: object = m.Goodbye(reason="done")  # same fields, another type
    assert m.Cancel(reason="done") != other
    assert other != (3,)
    assert len({HEARTBEAT, m.Heartbeat(seq=3), RESULT}) == 2


def test_a_record_with_a_mapping_is_unhashable() -> None:
    finished = m.TaskFinished(task="test", outcome="passed", exit_code=0, duration=0.0)
    with pytest.raises(TypeError):
        hash(finished)


def test_repr_names_every_field_like_a_dataclass() -> None:
    assert repr(HEARTBEAT) == "Heartbeat(seq=3)"
    assert repr(RESULT) == (
        "TestResult(nodeid='t.py::test', outcome='failed', duration=0.5, report='boom')"
    )
    assert repr(m.UnknownMessage(type="x", size=1)) == "UnknownMessage(type='x', size=1)"


def test_constructors_take_keywords_only_and_name_what_is_wrong() -> None:
    with pytest.raises(
        TypeError, match=r"^Heartbeat\(\) missing required keyword argument: 'seq'$"
    ):
        m.Heartbeat()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"arguments: 'outcome', 'duration'$"):
        m.TestResult(nodeid="a")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^Heartbeat\(\) got unexpected keyword argument: 'sec'$"):
        m.Heartbeat(seq=1, sec=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        m.Heartbeat(1)  # type: ignore[call-arg]
    with pytest.raises(m.InvalidMessage, match=r"test-result: .* 'duration'"):
        m.from_wire({"type": "test-result", "nodeid": "a", "outcome": "passed"})


def test_records_survive_copy_and_pickle() -> None:
    finished = m.TaskFinished(task="test", outcome="passed", exit_code=0, duration=1.0,
                              counts={"passed": 1})  # fmt: skip
    for message in (HEARTBEAT, RESULT, m.UnknownMessage(type="x", size=1)):
        assert copy.copy(message) == message
        assert copy.deepcopy(message) == message
        assert pickle.loads(pickle.dumps(message)) == message
    assert copy.copy(finished).counts == {"passed": 1}


def test_the_codec_does_not_import_dataclasses_typing_or_inspect() -> None:
    # The guest imports pyti.protocol on its boot path, where each of these costs tens of
    # milliseconds under TCG. cbor2 is imported first: what it imports is not ours.
    src = Path(__file__).resolve().parents[2] / "src"
    heavy = {"dataclasses", "typing", "inspect", "re", "ast"}
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import messages\n"  # alone, without the package (and cbor2)
        "alone = set(sys.modules) - before\n"
        "import cbor2\n"
        "before = set(sys.modules)\n"
        "import pyti.protocol\n"
        "print(' '.join(sorted(alone)))\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    path = [str(src), str(src / "pyti" / "protocol"), *(p for p in sys.path if p)]
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = {path!r}\n{script}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    alone, package = (set(line.split()) for line in done.stdout.splitlines())
    assert "messages" in alone
    assert "pyti.protocol.messages" in package
    assert not alone & heavy
    assert not package & heavy


def test_start_carries_the_clock_and_entropy_for_a_resumed_guest() -> None:
    start = m.Start(run_id="r", tasks=(), clock=1_790_000_000.25, entropy=b"\x00\xff" * 32)
    again = decode_body(encode(start)[4:])
    assert again == start
    # a whole-number clock may arrive as a CBOR integer: it stays a float
    assert m.from_wire({"type": "start", "run_id": "r", "tasks": [], "clock": 5}) == m.Start(
        run_id="r", tasks=(), clock=5.0
    )
