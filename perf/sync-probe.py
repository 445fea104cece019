#!/usr/bin/env python3
"""How long this filesystem's fdatasync takes while spate-like background
I/O runs beside it, with no spate at all.

A foreground loop appends 4 KiB into a pre-written 64 MiB file and
fdatasyncs, RATE times a second (spate's group commit at a third of peak
does about as many), for SECONDS in each scenario:

  quiet    nothing else
  zero     a spare 64 MiB segment made every 5 s the way spate makes one
           (zeros written a MiB at a time, each MiB synced, paced to half
           the time), then kept
  paced    64 MiB files freed every 5 s the way spate frees a reclaimed
           segment (holes punched a MiB at a time, paced), then unlinked
  unlink   64 MiB files unlinked whole every 5 s (what spate did before)
  recycle  what spate does now instead, every 5 s: a 64 MiB file renamed
           to a spare name, the directory synced, a new header written and
           synced, the file renamed again and the directory synced

Prints the sync latency percentiles and how many syncs took over 10 and
25 ms. With online discard (`findmnt -T DIR -o OPTIONS` shows `discard`)
freed blocks are trimmed at once, and each whole unlink can hold the next
syncs for tens of milliseconds (tuning/spool.md).

  perf/sync-probe.py [SECONDS] [RATE] [DIR] [SCENARIO...]
  perf/sync-probe.py 40 2900 target quiet zero paced unlink recycle

ZERO_STEP_KIB (default 1024) sets the zero-fill's step, to try others;
ZERO_SYNC=srf writes each step out with sync_file_range and syncs once at
the end instead of fdatasyncing every step.
"""
import ctypes
import multiprocessing
import os
import sys
import time

MIB = 1 << 20
SEGMENT = 64 * MIB
FALLOC_PUNCH = 3  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def written_file(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    for pos in range(0, SEGMENT, MIB):
        os.pwrite(fd, b"\1" * MIB, pos)
    os.fdatasync(fd)
    return fd


def punch_paced(fd):
    for pos in range(0, SEGMENT, MIB):
        t = time.monotonic()
        if libc.fallocate(fd, FALLOC_PUNCH, ctypes.c_int64(pos), ctypes.c_int64(MIB)) != 0:
            raise OSError(ctypes.get_errno(), "fallocate(PUNCH_HOLE)")
        time.sleep(2 * (time.monotonic() - t))


def zero_fill(path):
    """A spare segment made as spate makes one: zeros a step at a time,
    each step written out, pausing as long as the step took."""
    step = int(os.environ.get("ZERO_STEP_KIB", "1024")) << 10
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    for pos in range(0, SEGMENT, step):
        t = time.monotonic()
        os.pwrite(fd, bytes(step), pos)
        if os.environ.get("ZERO_SYNC") == "srf":
            # SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER
            libc.sync_file_range(fd, ctypes.c_int64(pos), ctypes.c_int64(step), 7)
        else:
            os.fdatasync(fd)
        time.sleep(time.monotonic() - t)
    os.fdatasync(fd)
    os.close(fd)


def sync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def recycle(directory, path, k):
    """A reclaimed segment's file reused the way spate reuses one; returns
    the file's new path."""
    spare = os.path.join(directory, f"probe-spare-{k}")
    os.rename(path, spare)
    sync_dir(directory)
    fd = os.open(spare, os.O_RDWR)
    os.pwrite(fd, bytes(4096 + 24), 0)
    os.fdatasync(fd)
    os.close(fd)
    new = os.path.join(directory, f"probe-seg-{k}")
    os.rename(spare, new)
    sync_dir(directory)
    return new


def background(scenario, directory, seconds, ready):
    """Runs SCENARIO's I/O every 5 s until SECONDS have passed."""
    made = []  # files to remove at the end
    to_free = []  # (path, fd) written before the clock starts
    if scenario in ("paced", "unlink"):
        paths = [os.path.join(directory, f"probe-bg-{k}") for k in range(int(seconds // 5) + 1)]
        to_free = [(p, written_file(p)) for p in paths]
        os.sync()
    reused = os.path.join(directory, "probe-reused")
    if scenario == "recycle":
        os.close(written_file(reused))
        os.sync()
    ready.set()
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        cycle = time.monotonic()
        if scenario == "zero":
            made.append(os.path.join(directory, f"probe-spare-{k}"))
            zero_fill(made[-1])
        elif scenario == "recycle":
            reused = recycle(directory, reused, k)
        elif to_free:
            path, fd = to_free.pop(0)
            if scenario == "paced":
                punch_paced(fd)
            os.close(fd)
            os.unlink(path)
        k += 1
        time.sleep(max(0.0, 5 - (time.monotonic() - cycle)))
    for path, fd in to_free:
        os.close(fd)
        os.unlink(path)
    for path in made:
        os.unlink(path)
    if scenario == "recycle":
        os.unlink(reused)


def foreground(directory, seconds, rate):
    path = os.path.join(directory, "probe-active")
    fd = written_file(path)
    buf = b"x" * 4096
    latencies = []
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        due = start + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        t = time.monotonic()
        os.pwrite(fd, buf, (i % (SEGMENT // 4096)) * 4096)
        os.fdatasync(fd)
        latencies.append(time.monotonic() - t)
        i += 1
    os.close(fd)
    os.unlink(path)
    return sorted(latencies)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 2900
    directory = sys.argv[3] if len(sys.argv) > 3 else "target"
    scenarios = sys.argv[4:] or ["quiet", "zero", "paced", "unlink"]
    os.makedirs(directory, exist_ok=True)
    print(f"fdatasync of 4 KiB appends, {rate:.0f}/s for {seconds:.0f} s a scenario, in {directory}")
    print(f"{'scenario':>8} {'syncs':>7} {'p50_ms':>7} {'p99_ms':>7} {'p99.9_ms':>8} {'max_ms':>7} {'>10ms':>6} {'>25ms':>6}")
    for scenario in scenarios:
        if scenario not in ("quiet", "zero", "paced", "unlink", "recycle"):
            sys.exit(f"perf/sync-probe.py: unknown scenario {scenario!r}")
        ready = multiprocessing.Event()
        bg = None
        if scenario != "quiet":
            bg = multiprocessing.Process(target=background, args=(scenario, directory, seconds, ready))
            bg.start()
            ready.wait()
        lat = foreground(directory, seconds, rate)
        if bg is not None:
            bg.join()
        n = len(lat)
        q = lambda p: lat[min(n - 1, int(p * n))] * 1000
        print(f"{scenario:>8} {n:>7} {q(.5):>7.2f} {q(.99):>7.2f} {q(.999):>8.2f} {lat[-1] * 1000:>7.1f}"
              f" {sum(x > .010 for x in lat):>6} {sum(x > .025 for x in lat):>6}")


if __name__ == "__main__":
    main()
