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


async def drive(port: int, clients: int, lines: list[str], requests: int, pid: int) -> dict:
    """`clients` clients sending one line each per request until `requests` are answered
    with 200; statuses, latencies, sentences/s, peak RSS and /health delays."""
    todo = iter(range(requests))
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    rss, health = [], []
    done = asyncio.Event()

    async def client() -> None:
        connection = Client(port)
        try:
            for i in todo:
                while True:
                    start = time.perf_counter()
                    try:
                        status, _ = await connection.call(
                            "POST", "/v1/translate", {"texts": [lines[i % len(lines)]]}
                        )
                    except (ConnectionError, OSError):
                        status = -1
                        connection.close()
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        latencies.append(time.perf_counter() - start)
                        break
                    await asyncio.sleep(0.1)
        finally:
            connection.close()

    async def watch() -> None:
        checker = Client(port)
        while not done.is_set():
            rss.append(resident_mib(pid))
            start = time.perf_counter()
            status, _ = await checker.call("GET", "/health")
            health.append((status, time.perf_counter() - start))
            await asyncio.sleep(0.1)
        checker.close()

    probe = Client(port)
    before = json.loads((await probe.call("GET", "/health"))[1])
    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - start
    done.set()
    await watcher
    probe.close()  # idle longer than the keep-alive: a new connection
    after = json.loads((await probe.call("GET", "/health"))[1])
    probe.close()
    return {
        "batch": (after["translated"] - before["translated"])
        / max(1, after["batches"] - before["batches"]),
        "sent_per_s": requests / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "statuses": statuses,
        "peak_rss_mib": max(rss),
        "health": health,
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
    for line in server.stdout:
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return server, int(found[1])
    sys.exit("the server did not start")


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


def main() -> None:
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
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    with gzip.open(str(SOURCE).format(lang=args.lang), "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[: args.lines]
    lines_file = args.work / "lines.txt"
    lines_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    import torch

    from pipelines.translator import Translator

    translator = Translator(args.model, "cpu", args.precision, beam_size=args.beam)
    print(f"model {args.model}: {translator.precision_note}; beam {args.beam}; {len(lines)} lines")
    print(f"torch threads {torch.get_num_threads()}")
    server, port = start_server(args)
    rates: dict[str, list[float]] = {}
    latency: dict[int, dict[str, list[float]]] = {n: {"p50": [], "p99": []} for n in args.clients}
    single: list[float] = []
    batch: dict[int, list[float]] = {n: [] for n in args.clients}
    try:
        for repeat in range(args.repeats):
            rates.setdefault("file", []).append(file_rate(args, lines_file, args.work / "out"))
            start = time.perf_counter()
            api_out = translator.translate(lines)
            rates.setdefault("api", []).append(len(lines) / (time.perf_counter() - start))
            if repeat == 0:
                written = (args.work / "out").read_text(encoding="utf-8").splitlines()
                print(f"API output identical to nmt translate's: {api_out == written}")
            for line in lines[:50]:
                start = time.perf_counter()
                translator.translate([line])
                single.append(1000 * (time.perf_counter() - start))
            for n in args.clients:
                requests = args.requests // 5 if n == 1 else args.requests
                result = asyncio.run(drive(port, n, lines, requests, server.pid))
                assert set(result["statuses"]) == {200}, result["statuses"]
                rates.setdefault(n, []).append(result["sent_per_s"])
                latency[n]["p50"].append(result["p50_ms"])
                latency[n]["p99"].append(result["p99_ms"])
                batch[n].append(result["batch"])
            print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    finally:
        server.terminate()
        server.wait()

    print(f"\n{'':28} {'sentences/s':>22} {'p50 ms':>22} {'p99 ms':>22}")
    print(f"{'nmt translate (file)':28} {summary(rates['file']):>22}")
    print(f"{'Python API (list)':28} {summary(rates['api']):>22}")
    print(f"{'Python API (one sentence)':28} {'':>22} {summary(single):>22}")
    for n in args.clients:
        row = f"{f'serve, {n} clients':28} {summary(rates[n]):>22}"
        print(row + f" {summary(latency[n]['p50']):>22} {summary(latency[n]['p99']):>22}")
    sizes = ", ".join(f"{n} clients {statistics.median(batch[n]):.1f}" for n in args.clients)
    print(f"mean texts per batch: {sizes}")
    file_median = statistics.median(rates["file"])
    for n in args.clients:
        print(f"serve {n} clients / file: {statistics.median(rates[n]) / file_median:.2f}")
    if 1 in args.clients:
        ratio = statistics.median(latency[1]["p50"]) / statistics.median(single)
        print(f"1-client p50 / one sentence through the API: {ratio:.2f}")
    print(f"API / file: {statistics.median(rates['api']) / file_median:.2f}")
    overload(args, lines)


def overload(args, lines: list[str]) -> None:
    queue = args.overload_queue
    server, port = start_server(args, f"--serve.max_queue={queue}")
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
