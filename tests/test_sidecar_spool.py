"""The disk spool: whole files only, recovery after crashes, a byte bound kept by merging, exact totals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from driftline.edge_sidecar.spool import Spool
from driftline.profile import StreamKey, WindowProfile, merge_all
from driftline.wire import Envelope, decode_envelope, encode_envelope

REPO = Path(__file__).resolve().parents[1]


def window(i: int, model: str = "m", rows: int = 500, seed: int | None = None) -> WindowProfile:
    rng = np.random.default_rng(i if seed is None else seed)
    p = WindowProfile(StreamKey.of(model, "1", source="dev"), 60.0 * i, 60.0 * i + 60)
    p.update({"x": rng.normal(size=rows), "c": rng.choice(list("abcdefghij"), rows)}, {"s": rng.random(rows)})
    return p


def totals(profiles: list[WindowProfile]) -> dict[str, tuple[int, int, int]]:
    out: dict[str, tuple[int, int, int]] = {}
    for p in profiles:
        r, x, c = out.get(p.key.model, (0, 0, 0))
        out[p.key.model] = (r + p.rows, x + p.features["x"].count, c + p.features["c"].count)
    return out


def test_windows_survive_a_restart_as_whole_envelope_files(tmp_path: Path) -> None:
    s = Spool(tmp_path, 10_000_000)
    names = [s.put(window(i)) for i in range(5)]
    assert all(names) and s.stats().pending == 5
    for name in names:
        env = decode_envelope((tmp_path / "pending" / name).read_bytes())
        assert len(env.profiles) == 1
    s.close()  # the directory lock: one process (one Spool) at a time
    again = Spool(tmp_path, 10_000_000)
    assert [e.name for e in again.entries()] == names
    assert again.stats().pending_rows == 2500
    assert again.put(window(9)) > names[-1]  # sequence numbers continue


def test_leftover_temporary_files_are_never_shipped(tmp_path: Path) -> None:
    s = Spool(tmp_path, 10_000_000)
    s.put(window(0))
    (tmp_path / "tmp" / "000000000002-x-y.dle.tmp").write_bytes(encode_envelope(Envelope([window(1)]))[:40])
    s.close()
    again = Spool(tmp_path, 10_000_000)
    assert again.stats().pending == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_merge_interrupted_after_its_commit_finishes_at_start_up(tmp_path: Path) -> None:
    s = Spool(tmp_path, 10_000_000)
    a, b = s.put(window(0)), s.put(window(1))
    merged = window(0).merge(window(1))
    target = "000000000001-ffffffff-merged00.dle"
    pending = tmp_path / "pending"
    (pending / (target + ".merge")).write_text(json.dumps({"sources": [a, b]}))
    (pending / target).write_bytes(encode_envelope(Envelope([merged])))
    s.close()
    again = Spool(tmp_path, 10_000_000)
    assert [e.name for e in again.entries()] == [target]
    assert again.stats().pending_rows == 1000
    assert not list(pending.glob("*.merge"))


def test_a_merge_interrupted_before_its_commit_is_discarded(tmp_path: Path) -> None:
    s = Spool(tmp_path, 10_000_000)
    a, b = s.put(window(0)), s.put(window(1))
    target = "000000000001-ffffffff-merged00.dle"
    (tmp_path / "pending" / (target + ".merge")).write_text(json.dumps({"sources": [a, b]}))
    (tmp_path / "tmp" / (target + ".tmp")).write_bytes(b"half a file")
    s.close()
    again = Spool(tmp_path, 10_000_000)
    assert [e.name for e in again.entries()] == [a, b]
    assert again.stats().pending_rows == 1000


def test_full_spool_merges_windows_of_a_stream_and_totals_stay_exact(tmp_path: Path) -> None:
    one = len(encode_envelope(Envelope([window(0)])))
    limit = 16 * one  # room for one fully merged (size-capped) sketch per stream
    s = Spool(tmp_path, limit)
    sent = [window(i, model=f"m{i % 3}", rows=200 + 37 * i) for i in range(60)]
    for p in sent:
        assert s.put(p) is not None
        assert s.stats().bytes <= limit
    st = s.stats()
    assert st.merged > 0 and st.dropped == 0
    assert st.pending_rows == sum(p.rows for p in sent)
    kept = s.profiles()
    assert totals(kept) == totals(sent)
    # Merged windows are the exact merge of what went in: quantile sketches and counters included.
    for model in ("m0", "m1", "m2"):
        ours = merge_all([p for p in kept if p.key.model == model])
        exact = merge_all([p for p in sent if p.key.model == model])
        assert ours.features["x"].sum == pytest.approx(exact.features["x"].sum)
        assert ours.features["c"].frequencies() == exact.features["c"].frequencies()
        assert ours.start == exact.start and ours.end == exact.end


def test_windows_with_an_unknown_delivery_outcome_are_never_merged(tmp_path: Path) -> None:
    one = len(encode_envelope(Envelope([window(0)])))
    s = Spool(tmp_path, 5 * one)
    first = s.put(window(0))
    (lease,) = s.lease(1)
    s.release(lease.name, tried=True)
    tried_name = s.entries()[0].name
    assert tried_name.endswith(".tried.dle") and tried_name != first
    for i in range(1, 30):
        s.put(window(i))
    names = [e.name for e in s.entries()]
    assert tried_name in names
    assert decode_envelope((tmp_path / "pending" / tried_name).read_bytes()).profiles[0].rows == 500
    assert s.stats().pending_rows == 30 * 500


def test_when_merging_cannot_make_room_the_oldest_window_is_dropped_and_counted(tmp_path: Path) -> None:
    one = len(encode_envelope(Envelope([window(0)])))
    s = Spool(tmp_path, int(3.5 * one))
    sent = [window(i, model=f"model-{i}") for i in range(6)]  # every window its own stream: nothing merges
    for p in sent:
        s.put(p)
    st = s.stats()
    assert st.dropped == 3 and st.dropped_rows == 1500 and st.merged == 0
    assert [p.key.model for p in s.profiles()] == ["model-3", "model-4", "model-5"]
    assert st.pending_rows + st.dropped_rows == 3000


def test_leased_windows_are_not_touched_while_being_sent(tmp_path: Path) -> None:
    one = len(encode_envelope(Envelope([window(0)])))
    s = Spool(tmp_path, int(2.5 * one))
    s.put(window(0, model="a"))
    s.put(window(1, model="b"))
    leases = s.lease(10)
    assert len(leases) == 2
    assert s.put(window(2, model="c")) is None  # no room, and nothing it may merge or drop
    assert s.stats().dropped == 1 and s.stats().pending == 2
    s.confirm(leases[0].name)
    s.release(leases[1].name)
    assert s.put(window(3, model="c")) is not None


def test_rejected_and_corrupt_files_are_moved_aside_with_a_reason(tmp_path: Path) -> None:
    s = Spool(tmp_path, 10_000_000, rejected_max_files=2)
    names = [s.put(window(i)) for i in range(4)]
    for name in names[:3]:
        s.reject(name, "service answered 401: bad token")
    rejected = sorted(p.name for p in (tmp_path / "rejected").glob("*.dle"))
    assert rejected == names[1:3]  # the oldest beyond rejected_max_files is deleted (and logged)
    assert (tmp_path / "rejected" / (names[2] + ".why")).read_text().startswith("service answered 401")
    (tmp_path / "pending" / names[3]).write_bytes(b"DLNE garbage")
    s.close()
    again = Spool(tmp_path, 10_000_000)
    assert again.stats().pending == 0 and again.stats().rejected == 1


WRITER = textwrap.dedent("""
    import sys, numpy as np
    from driftline.edge_sidecar.spool import Spool
    from driftline.profile import StreamKey, WindowProfile
    spool = Spool(sys.argv[1], int(sys.argv[2]))
    rng = np.random.default_rng(0)
    i = 0
    while True:
        p = WindowProfile(StreamKey.of("m%d" % (i % 2), "1"), 60.0 * i, 60.0 * i + 60)
        p.update({"x": rng.normal(size=100)})
        spool.put(p)
        i += 1
        print(i * 100, flush=True)
""")


def test_sigkill_in_the_middle_of_writes_and_merges_loses_no_committed_window(tmp_path: Path) -> None:
    limit = 20_000  # small: the writer is merging most of the time
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(limit)], stdout=subprocess.PIPE,
                            text=True, cwd=REPO)
    committed = 0
    try:
        deadline = time.monotonic() + 60
        while committed < 20_000 and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            committed = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert committed >= 20_000
    after = Spool(tmp_path, limit)
    st = after.stats()
    assert st.rejected == 0  # every pending file decodes: no torn writes
    assert st.dropped == 0
    assert st.pending < committed // 100  # the bound forced merges
    # Every put that returned is there exactly once; at most the one in flight may also have landed.
    assert committed <= st.pending_rows <= committed + 200
    assert st.pending_rows % 100 == 0


def test_one_spool_directory_serves_one_process(tmp_path: Path) -> None:
    from driftline.edge_sidecar.errors import SpoolError

    s = Spool(tmp_path, 10_000_000)
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, 10_000_000)
    s.close()
    Spool(tmp_path, 10_000_000).close()


@pytest.mark.parametrize("setting", ["auto", "always", "never"])
def test_transport_compress_decides_the_spool_files_and_what_is_shipped(tmp_path: Path, setting: str) -> None:
    """``transport.compress`` reaches both the spool's files and the shipped envelopes: ``always`` zlibs
    every body, ``never`` none, ``auto`` only a body zlib shrinks by a quarter (a window of float64
    sketches does not; one of a few repeated strings does). Every form decodes to the same windows."""
    from driftline.edge_sidecar.settings import load_settings
    from driftline.edge_sidecar.shipper import Shipper
    from driftline.wire import FLAG_ZLIB, HEADER

    compress = {"auto": None, "always": True, "never": False}[load_settings(None, transport={"compress": setting})
                                                              .transport.compress]
    numeric = window(1)  # float64 sketches: zlib saves ~14%
    text = WindowProfile(StreamKey.of("m", "1", source="dev"), 0.0, 60.0)
    rng = np.random.default_rng(3)  # 20 categorical columns of three values: zlib saves ~80%
    text.update({f"c{i}": rng.choice(["alpha", "beta", "gamma"], 500) for i in range(20)}, None)
    shipped: list[bytes] = []

    class Capture:
        name = "capture"

        def send(self, batch):  # noqa: ANN001, ANN202
            shipped.extend(o.data for o in batch)
            return [None] * len(batch)

        def close(self) -> None:
            pass

    s = Spool(tmp_path, 10_000_000, compress=compress)
    names = [s.put(numeric), s.put(text)]
    on_disk = [(tmp_path / "pending" / n).read_bytes() for n in names]
    assert Shipper(s, Capture(), compress=compress).ship_once() == (2, False)

    def zlibbed(data: bytes) -> bool:
        return bool(HEADER.unpack_from(data)[3] & FLAG_ZLIB)

    want = {"auto": [False, True], "always": [True, True], "never": [False, False]}[setting]
    assert [zlibbed(d) for d in on_disk] == want and [zlibbed(d) for d in shipped] == want
    for data, original in zip(shipped, (numeric, text), strict=True):
        assert decode_envelope(data).profiles[0].to_dict() == original.to_dict()
    with pytest.raises(Exception, match="compress"):
        load_settings(None, transport={"compress": "gzip"})
