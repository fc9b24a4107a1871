"""Load test of `nmt serve`: concurrent one-sentence clients against translating a file.

Starts `nmt serve` on 127.0.0.1 and drives it with N concurrent clients (asyncio, one
keep-alive connection each), each sending one sentence of Multi30k test_2016_flickr at a
time, for a bounded number of requests. Prints, in one run, sentences/s and p50/p99 latency
at each client count, next to `nmt translate` of the same lines as a file (its own figure,
model loading excluded) and the Python API (the same list in one call; one sentence alone
for latency), all with the same model, beam and precision, over interleaved repetitions
(median and range). Then overload: a second server with a small queue, driven by 10x as many
clients as the queue holds (a client told 503 waits 0.1 s and sends again), with the count
of each answer status, the server's peak RSS against a 32-client run on the same server,
and /health polled throughout and after.

    python benchmarks/serve_load.py --model runs/m30k_de_en
    python benchmarks/serve_load.py --model RUN --clients 1 8 32 128 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOURCE = ROOT.parent / "shared" / "data" / "multi30k" / "test_2016_flickr.{lang}.gz"


class Client:
    """One keep-alive HTTP/1.1 connection sending JSON POSTs (uvicorn answers with a
    Content-Length, which is all this reads)."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def call(self, method: str, path: str, payload=None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = b"" if payload is None else json.dumps(payload).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        answer = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection") == "close":
            self.close()
        return int(status_line.split()[1]), answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Load:
    """What one load run saw."""

    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, of the 200 answers
    rss: list[float] = field(default_factory=list)  # the server's resident MiB, sampled
    health: list[tuple[int, float]] = field(default_factory=list)  # /health status, seconds


async def one_client(port: int, lines: list[str], todo, load: Load) -> None:
    """Sends the next line of `todo` until none is left; after a 503, again 0.1 s later."""
    connection = Client(port)
    try:
        for i in todo:
            while True:
                start = time.perf_counter()
                try:
                    body = {"texts": [lines[i % len(lines)]]}
                    status, _ = await connection.call("POST", "/v1/translate", body)
                except (ConnectionError, OSError):
                    status = -1
                    connection.close()
                load.statuses[status] = load.statuses.get(status, 0) + 1
                if status == 200:
                    load.latencies.append(time.perf_counter() - start)
                    break
                await asyncio.sleep(0.1)
    finally:
        connection.close()


async def watch(port: int, pid: int, load: Load, done: asyncio.Event) -> None:
    """Every 0.1 s: the server's RSS, and how long /health takes to answer."""
    checker = Client(port)
    while not done.is_set():
        load.rss.append(resident_mib(pid))
        start = time.perf_counter()
        status, _ = await checker.call("GET", "/health")
        load.health.append((status, time.perf_counter() - start))
        await asyncio.sleep(0.1)
    checker.close()


async def drive(port: int, clients: int, lines: list[str], requests: int, pid: int) -> dict:
    """`clients` clients sending one line each per request until `requests` are answered
    with 200; statuses, latencies, sentences/s, peak RSS and /health delays."""
    todo, load, done = iter(range(requests)), Load(), asyncio.Event()
    before = json.loads((await Client(port).call("GET", "/health"))[1])
    watcher = asyncio.create_task(watch(port, pid, load, done))
    start = time.perf_counter()
    await asyncio.gather(*(one_client(port, lines, todo, load) for _ in range(clients)))
    seconds = time.perf_counter() - start
    done.set()
    await watcher
    after = json.loads((await Client(port).call("GET", "/health"))[1])
    texts, batches = (after[k] - before[k] for k in ("translated", "batches"))
    return {
        "batch": texts / max(1, batches),
        "sent_per_s": requests / seconds,
        "p50_ms": 1000 * percentile(load.latencies, 0.5),
        "p99_ms": 1000 * percentile(load.latencies, 0.99),
        "statuses": load.statuses,
        "peak_rss_mib": max(load.rss),
        "health": load.health,
    }


def resident_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024


def start_server(args, *extra: str) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "cli.py", "serve", "-m", args.model, "--port", "0"]
    command += ["--device", "cpu", "--precision", args.precision, "--beam-size", str(args.beam)]
    server = subprocess.Popen(
        [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT
    )
    said = []
    for line in server.stdout:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return server, int(found[1])
        said.append(line)
    sys.exit("the server did not start: " + "".join(said[-3:]))


def file_rate(args, lines_file: Path, out: Path) -> float:
    """`nmt translate` of the lines as a file: its own sentences/s, loading excluded."""
    command = [sys.executable, "cli.py", "translate", "-m", args.model, "-i", str(lines_file)]
    command += ["-o", str(out), "--device", "cpu", "--precision", args.precision]
    result = subprocess.run(
        [*command, "--beam-size", str(args.beam)], capture_output=True, text=True, cwd=ROOT
    )
    if result.returncode:
        sys.exit(result.stderr)
    return float(re.search(r"\(([\d.]+) sentences/s", result.stdout)[1])


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder or checkpoint")
    parser.add_argument("--lang", default="de", help="source language of the model")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--requests", type=int, default=1000, help="per client count (1: 1/5)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overload-queue", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("runs") / "serve_load")
    return parser.parse_args()


def one_round(args, translator, lines: list[str], port: int, pid: int, seen: dict) -> None:
    """Each way of translating the lines once, into `seen` (name: list of figures)."""
    lines_file = args.work / "lines.txt"
    seen.setdefault("file", []).append(file_rate(args, lines_file, args.work / "out"))
    start = time.perf_counter()
    api_out = translator.translate(lines)
    seen.setdefault("api", []).append(len(lines) / (time.perf_counter() - start))
    written = (args.work / "out").read_text(encoding="utf-8").splitlines()
    seen.setdefault("identical", []).append(api_out == written)
    for line in lines[:50]:
        start = time.perf_counter()
        translator.translate([line])
        seen.setdefault("single", []).append(1000 * (time.perf_counter() - start))
    for n in args.clients:
        requests = args.requests // 5 if n == 1 else args.requests
        result = asyncio.run(drive(port, n, lines, requests, pid))
        assert set(result["statuses"]) == {200}, result["statuses"]
        for key in ("sent_per_s", "p50_ms", "p99_ms", "batch"):
            seen.setdefault((n, key), []).append(result[key])


def report(args, seen: dict) -> None:
    print(f"API output identical to nmt translate's: {all(seen['identical'])}")
    print(f"\n{'':28} {'sentences/s':>22} {'p50 ms':>22} {'p99 ms':>22}")
    print(f"{'nmt translate (file)':28} {summary(seen['file']):>22}")
    print(f"{'Python API (list)':28} {summary(seen['api']):>22}")
    print(f"{'Python API (one sentence)':28} {'':>22} {summary(seen['single']):>22}")
    for n in args.clients:
        row = [summary(seen[n, key]) for key in ("sent_per_s", "p50_ms", "p99_ms")]
        print(f"{f'serve, {n} clients':28} " + " ".join(f"{cell:>22}" for cell in row))
    sizes = (f"{n} clients {statistics.median(seen[n, 'batch']):.1f}" for n in args.clients)
    print(f"mean texts per batch: {', '.join(sizes)}")
    file_median = statistics.median(seen["file"])
    for n in args.clients:
        ratio = statistics.median(seen[n, "sent_per_s"]) / file_median
        print(f"serve {n} clients / file: {ratio:.2f}")
    if 1 in args.clients:
        ratio = statistics.median(seen[1, "p50_ms"]) / statistics.median(seen["single"])
        print(f"1-client p50 / one sentence through the API: {ratio:.2f}")
    print(f"API / file: {statistics.median(seen['api']) / file_median:.2f}")


def main() -> None:
    args = arguments()
    args.work.mkdir(parents=True, exist_ok=True)
    with gzip.open(str(SOURCE).format(lang=args.lang), "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[: args.lines]
    (args.work / "lines.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import torch

    from pipelines.translator import Translator

    translator = Translator(args.model, "cpu", args.precision, beam_size=args.beam)
    print(f"model {args.model}: {translator.precision_note}; beam {args.beam}; {len(lines)} lines")
    print(f"torch threads {torch.get_num_threads()}")
    server, port = start_server(args)
    seen: dict = {}
    try:
        for repeat in range(args.repeats):
            one_round(args, translator, lines, port, server.pid, seen)
            print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    finally:
        server.terminate()
        server.wait()
    report(args, seen)
    overload(args, lines)


def overload(args, lines: list[str]) -> None:
    queue = args.overload_queue
    server, port = start_server(args, f"--serve.max_queue={queue}", f"--serve.max_texts={queue}")
    try:
        base = asyncio.run(drive(port, 32, lines, args.requests, server.pid))
        heavy = asyncio.run(drive(port, 10 * queue, lines, 2 * args.requests, server.pid))
        after = asyncio.run(Client(port).call("GET", "/health"))[0]
    finally:
        server.terminate()
        code = server.wait()
    print(f"\noverload: serve.max_queue={queue}, 32 clients then {10 * queue} clients")
    for name, result in (("32 clients", base), (f"{10 * queue} clients", heavy)):
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items()))
        checks = [seconds for status, seconds in result["health"] if status == 200]
        print(
            f"{name:12} {result['sent_per_s']:7.1f} sentences/s, answers {{{statuses}}}, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB, /health {len(checks)}/"
            f"{len(result['health'])} answered, slowest {1000 * max(checks):.0f} ms"
        )
    growth = heavy["peak_rss_mib"] / base["peak_rss_mib"] - 1
    print(f"peak RSS under overload vs 32 clients: {100 * growth:+.1f}%")
    print(f"/health after the overload: {after}; server exit code after SIGTERM: {code}")


if __name__ == "__main__":
    main()
