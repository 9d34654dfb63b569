"""Cost of decoding hostile and large envelopes: wall time and peak memory per input, at the 4 MiB limit.

Goal (issue 14): any envelope up to the size limit decodes or is refused in <= 100 ms with <= 64 MB
extra memory. Each input runs in a fresh child process so peak RSS growth is its own; CPU time is
printed next to wall time because a shared machine stretches the latter. Not a test.

Run: ``python bench/bench_wire_hostile.py``
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
import uuid
import zlib

LIMIT = 4 * 1024 * 1024


def _seal(body: bytes, compress: bool = True) -> bytes:
    from driftline.wire import HEADER, MAGIC

    if compress:
        body = zlib.compress(body, 9)
    return HEADER.pack(MAGIC, 1, 0, 1 if compress else 0, uuid.uuid4().bytes, len(body), zlib.crc32(body)) + body


def inputs() -> dict[str, bytes]:
    import numpy as np

    from driftline.profile import ProfileConfig, StreamKey, WindowProfile
    from driftline.wire import Envelope, encode_envelope

    rng = np.random.default_rng(0)
    big = []
    for i in range(40):
        p = WindowProfile(StreamKey.of("m", "v1", "b", f"d{i}"), 0.0, 60.0, ProfileConfig(categorical=frozenset({"c"})))
        p.update({f"x{j}": rng.normal(size=20000) for j in range(10)} | {"c": rng.choice(list("abcdef"), 20000)})
        big.append(p)
    valid = encode_envelope(Envelope(big))
    return {
        "issue: 64M-element array of empty arrays (15.6 KB)":
            _seal(b"\x81\xa8profiles\xdd" + (64 << 20).to_bytes(4, "big") + b"\x90" * (16 << 20)),
        "65535 x 65535 nested empty arrays": _seal(b"\x81\xa8profiles\xdc\xff\xff" + (b"\xdc\xff\xff" + b"\x90" * 65535) * 256),
        "5000-deep nesting": _seal(b"\x81\xa8profiles" + b"\x91" * 5000 + b"\xc0"),
        "decompression bomb (200 MB of zeros)": _seal(b"\0" * (200 << 20)),
        "4 MiB of nils, uncompressed": _seal(b"\x81\xa8profiles\xdc\xff\xff" + b"\xc0" * (LIMIT - 100), compress=False),
        f"valid: 40 profiles x 11 columns ({len(valid) // 1024} KiB)": valid,
    }


def _run(data: bytes, q: mp.Queue) -> None:
    from driftline.errors import WireFormatError
    from driftline.wire import decode_envelope

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, cpu = time.perf_counter(), time.process_time()
    try:
        env = decode_envelope(data, max_bytes=LIMIT)
        outcome = f"decoded {len(env.profiles)} profiles"
    except WireFormatError as exc:
        outcome = f"refused: {str(exc)[:70]}"
    ms, cpu_ms = (time.perf_counter() - t) * 1000, (time.process_time() - cpu) * 1000
    q.put((ms, cpu_ms, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, outcome))


def main() -> None:
    ctx = mp.get_context("fork")
    import driftline.wire  # noqa: F401  (imported before forking: the children measure decoding only)

    rows = []
    for name, data in inputs().items():
        q: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(data, q))
        proc.start()
        ms, cpu_ms, mb, outcome = q.get(timeout=120)
        proc.join()
        rows.append({"input": name, "bytes": len(data), "ms": round(ms, 1), "extra_rss_mb": round(mb, 1),
                     "outcome": outcome})
        print(f"{name:52s} {len(data):>8d} B {ms:7.1f} ms wall {cpu_ms:7.1f} ms cpu {mb:6.1f} MB  {outcome}")
    print(json.dumps({"load_average": list(__import__("os").getloadavg())}))


if __name__ == "__main__":
    main()
