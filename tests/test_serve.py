"""`nmt serve` as a client sees it: a real server process on loopback, real HTTP clients
(urllib and the libretranslatepy client library), real signals."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from libretranslatepy import LibreTranslateAPI

from pipelines.translator import Translator

from .conftest import ROOT


class Server:
    """`nmt serve` in a process of its own, on a free port of 127.0.0.1."""

    def __init__(self, model: Path, *args: str):
        command = [sys.executable, "cli.py", "serve", "-m", str(model), "--port", "0"]
        self.process = subprocess.Popen(
            [*command, "--device", "cpu", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.lines = []
        for line in self.process.stdout:
            self.lines.append(line)
            found = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if found:
                self.url = found.group(1)
                return
        raise AssertionError(f"the server did not start: {self.process.stderr.read()}")

    def request(self, path: str, body: bytes | None = None, kind: str = "application/json"):
        """(status, parsed JSON answer, headers) of one request."""
        headers = {"Content-Type": kind} if body is not None else {}
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read()), answer.headers
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), error.headers

    def post(self, path: str, fields) -> tuple[int, object]:
        status, answer, _ = self.request(path, json.dumps(fields).encode())
        return status, answer

    def stop(self, sig: int | None = signal.SIGTERM) -> tuple[int, str, str]:
        """Send `sig` (None: none, it was sent) and wait: exit code, stdout, stderr."""
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, "".join(self.lines) + out, err


@pytest.fixture(scope="module")
def server(trained_run):
    server = Server(trained_run)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator(trained_run, "cpu")


@pytest.fixture(scope="module")
def lines(tiny_corpus) -> list[str]:
    return (tiny_corpus / "test.en").read_text(encoding="utf-8").splitlines()[:12]


def test_listens_on_loopback_by_default(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert server.request("/health")[:2][0] == 200


def test_the_json_api_answers_what_the_python_api_gives(server, translator, lines):
    status, answer = server.post("/v1/translate", {"texts": lines + [""]})
    assert status == 200
    assert answer["translations"] == translator.translate(lines) + [""]
    status, answer = server.post("/v1/translate", {"texts": lines, "beam_size": 4, "n_best": 2})
    assert status == 200
    expected = translator.generate(lines, beam_size=4, n_best=2)
    assert answer["n_best"] == [[{"text": t.text, "score": t.score} for t in h] for h in expected]
    assert answer["translations"] == [h[0].text for h in expected]


def test_libretranslate_clients_work_unchanged(server, translator, lines):
    client = LibreTranslateAPI(server.url)
    assert client.translate(lines[0], "en", "de") == translator.translate(lines[0])
    codes = {language["code"]: language["targets"] for language in client.languages()}
    assert codes["en"] == ["de"]
    two_lines = f"{lines[1]}\n{lines[2]}"  # a paragraph: each line translated alone
    assert client.translate(two_lines, "auto", "de") == "\n".join(translator.translate(lines[1:3]))


def test_json_sent_as_a_form_still_reads_as_json(server, translator, lines):
    """curl -d sends JSON with a form's content type."""
    body = json.dumps({"texts": lines[:2]}).encode()
    status, answer, _ = server.request("/v1/translate", body, "application/x-www-form-urlencoded")
    assert status == 200 and answer["translations"] == translator.translate(lines[:2])
    status, answer, _ = server.request(
        "/translate", json.dumps({"q": lines[0], "source": "en", "target": "de"}).encode(), ""
    )
    assert status == 200 and answer["translatedText"] == translator.translate(lines[0])


def test_libretranslate_json_lists_and_alternatives(server, translator, lines):
    status, answer = server.post(
        "/translate", {"q": lines[:3], "source": "en", "target": "de", "alternatives": 2}
    )
    assert status == 200
    expected = translator.generate(
        lines[:3], n_best=3, beam_size=max(3, translator.search.beam_size)
    )
    assert answer["translatedText"] == [h[0].text for h in expected]
    assert answer["alternatives"] == [[t.text for t in h[1:]] for h in expected]
    for optional in ({"alternatives": None}, {"format": None}):  # null: as if not sent
        request = {"q": lines[0], "source": "en", "target": "de", **optional}
        status, answer = server.post("/translate", request)
        assert status == 200 and answer["translatedText"] == translator.translate(lines[0])
    status, answer = server.post("/v1/translate", {"texts": lines[:1], "beam_size": None})
    assert status == 200 and answer["translations"] == translator.translate(lines[:1])


BAD_REQUESTS = [
    # (path, body, content type, status, words the error names)
    ("/v1/translate", b'{"texts": ["a"', "application/json", 400, "not valid JSON"),
    ("/v1/translate", b"\xff\xfe{}", "application/json", 400, "not valid UTF-8"),
    ("/v1/translate", b'["a"]', "application/json", 400, "expected a JSON object"),
    ("/v1/translate", b"{}", "application/json", 400, "'texts' is missing"),
    ("/v1/translate", b'{"texts": []}', "application/json", 400, "empty list"),
    ("/v1/translate", b'{"texts": 5}', "application/json", 400, "expected a list of strings"),
    ("/v1/translate", b'{"texts": ["a", 1]}', "application/json", 400, "'texts[1]'"),
    ("/v1/translate", b'{"texts": ["a"], "beam": 2}', "application/json", 400, "unknown field"),
    ("/v1/translate", b'{"texts": ["a"], "beam_size": 0}', "application/json", 400, "beam_size"),
    ("/v1/translate", b'{"texts": ["a"], "beam_size": 99}', "application/json", 400, "beam_size"),
    ("/v1/translate", b'{"texts": ["a"], "beam_size": "5x"}', "application/json", 400, "beam"),
    ("/v1/translate", b'{"texts": ["a"], "beam_size": true}', "application/json", 400, "beam"),
    ("/v1/translate", b'{"texts": ["a"], "beam_size": 2, "n_best": 3}', "application/json", 400,
     "n_best"),
    ("/v1/translate", b'{"texts": ["a"], "target": "fr"}', "application/json", 400, "en to de"),
    ("/v1/translate", json.dumps({"texts": ["a"] * 65}).encode(), "application/json", 413,
     "serve.max_texts"),
    ("/v1/translate", b'{"texts": ["' + b"a" * 300_000 + b'"]}', "application/json", 413,
     "serve.max_body_bytes"),
    ("/translate", b"q=a&source=en&target=fr", "application/x-www-form-urlencoded", 400,
     "en to de"),
    ("/translate", b"q=a&source=xx&target=de", "application/x-www-form-urlencoded", 400, "source"),
    ("/translate", b"source=en&target=de", "application/x-www-form-urlencoded", 400, "'q'"),
    ("/translate", b"q=a&target=de", "application/x-www-form-urlencoded", 400, "'source'"),
    ("/translate", b'{"q": "a", "source": "en", "target": "de", "format": "html"}',
     "application/json", 400, "format"),
    ("/translate", b'{"q": "a", "source": "en", "target": "de", "alternatives": -1}',
     "application/json", 400, "alternatives"),
    ("/translate", b"--x\r\n", "multipart/form-data; boundary=x", 415, "multipart"),
    ("/translate", b'["x"]', "application/json", 400, "expected a JSON object"),
    ("/translate", b"q=a&source=en&target=de&alternatives=%2B-5",
     "application/x-www-form-urlencoded", 400, "alternatives"),
    ("/v1/translate", '{"texts": ["a"], "beam_size": "²"}'.encode(), "application/json", 400,
     "beam_size"),
    ("/translate", b"q=%FF&source=en&target=de", "application/x-www-form-urlencoded", 400,
     "UTF-8"),
    ("/v1/translate", b'{"' + b"k" * 5000 + b'": 1, "texts": ["a"]}', "application/json", 400,
     "unknown field"),
    ("/nowhere", b"{}", "application/json", 404, "no endpoint"),
    ("/" + "a" * 5000, b"{}", "application/json", 404, "no endpoint"),
    ("/v1/translate/", b'{"texts": ["a"]}', "application/json", 404, "no endpoint"),
    ("/v1/translate", b'{"texts": ["\\ud800"]}', "application/json", 400, "texts[0]"),
    ("/translate", b'{"q": "\\udfff", "source": "en", "target": "de"}', "application/json", 400,
     "field 'q[0]': not valid Unicode"),
    ("/v1/translate", b'{"texts": ["a"], "beam_size": ' + b"9" * 5000 + b"}", "application/json",
     400, "not JSON this server reads"),
    ("/v1/translate", b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json",
     400, "nested too deeply"),
    ("/health", b"{}", "application/json", 405, "not allowed"),
]  # fmt: skip


@pytest.mark.parametrize("path, body, kind, status, words", BAD_REQUESTS)
def test_a_bad_request_gets_a_one_line_error_and_the_server_serves_on(
    server, path, body, kind, status, words
):
    got, answer, _ = server.request(path, body, kind)
    assert got == status
    assert set(answer) == {"error"} and "\n" not in answer["error"]
    assert len(answer["error"]) < 200  # a short excerpt of what was sent, at most
    assert words in answer["error"]
    assert server.request("/health")[0] == 200


def test_requests_of_several_texts_and_settings_get_their_own_answers(server, translator, lines):
    """Requests of 1 to 4 texts (some empty), with two beam sizes, sent together: each
    answer holds its own texts' translations, in order, as the Python API gives them."""
    requests = [
        {"texts": [lines[(i + j) % len(lines)] if (i + j) % 5 else "" for j in range(i % 4 + 1)],
         **({"beam_size": 2} if i % 3 == 0 else {})}
        for i in range(40)
    ]  # fmt: skip
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda r: server.post("/v1/translate", r), requests))
    for request, (status, answer) in zip(requests, answers):
        assert status == 200
        search = {k: v for k, v in request.items() if k != "texts"}
        assert answer["translations"] == translator.translate(request["texts"], **search)


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server, translator, lines):
    before = server.request("/health")[1]
    expected = dict(zip(lines, translator.translate(lines)))
    texts = [lines[i % len(lines)] for i in range(48)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda t: server.post("/v1/translate", {"texts": [t]}), texts))
    assert all(status == 200 for status, _ in answers)
    assert [answer["translations"][0] for _, answer in answers] == [expected[t] for t in texts]
    after = server.request("/health")[1]
    assert after["translated"] - before["translated"] == 48
    assert after["batches"] - before["batches"] < 48  # some requests shared a batch


def test_a_full_queue_answers_503_with_retry_after_and_recovers(trained_run, lines):
    server = Server(trained_run, "--serve.max_queue=4", "--serve.max_texts=4")
    try:
        results, headers = [], []
        with ThreadPoolExecutor(16) as pool:
            for _ in range(10):  # rounds of 32 requests of 3 texts, until some found it full
                body = json.dumps({"texts": lines[:3]}).encode()
                sent = pool.map(server.request, ["/v1/translate"] * 32, [body] * 32)
                for status, answer, header in sent:
                    results.append((status, answer))
                    headers += [header["Retry-After"]] if status == 503 else []
                if headers:
                    break
        assert {status for status, _ in results} == {200, 503}
        assert set(headers) == {"1"}
        assert all("serve.max_queue" in a["error"] for status, a in results if status == 503)
        assert all(len(a["translations"]) == 3 for status, a in results if status == 200)
        assert server.post("/v1/translate", {"texts": lines[:4]})[0] == 200
    finally:
        server.stop()


def test_max_texts_cannot_exceed_what_the_queue_holds(trained_run):
    command = [sys.executable, "cli.py", "serve", "-m", str(trained_run), "--port", "0"]
    command += ["--serve.max_queue=4", "--serve.max_texts=8"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "serve.max_texts" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_answers_the_requests_in_flight_and_refuses_new_ones(trained_run, lines, sig):
    """A request that takes seconds (outputs forced long) is in flight when the signal
    comes: new connections are refused at once, and it still gets its whole answer."""
    import socket
    import time

    slow = ["--search.min_len=60", "--search.max_len_b=80", "--serve.max_texts=64"]
    server = Server(trained_run, *slow)
    answers = []
    body = {"texts": (lines * 6)[:64], "beam_size": 8}
    sending = threading.Thread(target=lambda: answers.append(server.post("/v1/translate", body)))
    sending.start()
    while not server.request("/health")[1]["translating"]:  # until it is being translated
        time.sleep(0.01)
    server.process.send_signal(sig)
    address = server.url.removeprefix("http://").split(":")
    refused_in_flight = None
    for _ in range(500):
        try:
            socket.create_connection((address[0], int(address[1])), timeout=1).close()
        except (ConnectionRefusedError, ConnectionResetError):  # a reset: it closed mid-accept
            refused_in_flight = not answers
            break
        time.sleep(0.01)
    sending.join()
    code, out, err = server.stop(None)
    assert refused_in_flight is True  # refused while the answer was still being made
    assert answers[0][0] == 200 and len(answers[0][1]["translations"]) == 64
    assert code == 0, err
    assert "serve: stopped" in out and "Traceback" not in err


def test_a_port_in_use_is_one_line(server, trained_run):
    port = server.url.rsplit(":", 1)[1]
    command = [sys.executable, "cli.py", "serve", "-m", str(trained_run), "--port", port]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_answers_are_sent_without_waiting_for_acks():
    """Connections of the listening socket get TCP_NODELAY from asyncio (which sets it only
    when the protocol is named); with Nagle's algorithm on, every answer waited 40 ms."""
    import asyncio
    import socket

    from pipelines.serve import listen

    sock = listen("127.0.0.1", 0)
    flags = []

    async def main():
        async def accepted(reader, writer):
            option = writer.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            flags.append(option)
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        while not flags:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main())
    assert flags == [1]


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_works(translator, lines):
    """A fault injected into the search: every request of that batch hears of it; the
    batcher goes on. The event loop runs on a thread, the model on this one, as in serve."""
    import asyncio

    from pipelines.batcher import Batcher, ModelThread
    from seq2seq.config import ServeConfig

    model, outcomes, done = ModelThread(), [], threading.Event()
    real = translator.search_chunk

    def failing(*args, **kwargs):
        raise RuntimeError("injected")

    async def main():
        batcher = Batcher(translator, ServeConfig(), model)
        task = batcher.start()
        translator.search_chunk = failing
        first = [batcher.submit([line], translator.search) for line in lines[:3]]
        outcomes.append(await asyncio.gather(*first, return_exceptions=True))
        translator.search_chunk = real
        outcomes.append(await batcher.submit(lines[:2], translator.search))
        task.cancel()

    loop = threading.Thread(target=lambda: (asyncio.run(main()), done.set()))
    loop.start()
    model.work_until(done.is_set)
    loop.join()
    assert [str(e) for e in outcomes[0]] == ["injected"] * 3
    assert [hyps[0].text for hyps in outcomes[1]] == translator.translate(lines[:2])


def test_a_second_signal_stops_at_once_without_a_traceback(trained_run, lines):
    import time

    server = Server(trained_run, "--search.min_len=60", "--search.max_len_b=80")
    body = {"texts": (lines * 6)[:64], "beam_size": 8}

    def send():
        with contextlib.suppress(OSError, ValueError):  # cut off by the second signal
            server.post("/v1/translate", body)

    sending = threading.Thread(target=send, daemon=True)
    sending.start()
    while not server.request("/health")[1]["translating"]:
        time.sleep(0.01)
    server.process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    code, out, err = server.stop(signal.SIGINT)
    assert code == 0 and "serve: stopped" in out
    assert "Traceback" not in err, err


def test_a_client_that_hangs_up_costs_no_translation_and_no_traceback(trained_run, lines):
    """Texts of requests whose clients went away before their batch are not translated;
    a client that stops in the middle of its body leaves no traceback in the log."""
    import socket
    import time

    server = Server(trained_run, "--search.min_len=400", "--search.max_len_b=420")
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"texts": (lines * 6)[:64], "beam_size": 16}).encode()
    sending = threading.Thread(target=lambda: server.request("/v1/translate", body))
    sending.start()
    while not server.request("/health")[1]["translating"]:
        time.sleep(0.01)
    for _ in range(3):  # queued behind the busy batch, then gone
        with socket.create_connection((host, int(port))) as sock:
            request = json.dumps({"texts": lines[:10]}).encode()
            head = f"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(request)}\r\n"
            sock.sendall(head.encode() + b"Content-Type: application/json\r\n\r\n" + request)
            time.sleep(0.1)
    with socket.create_connection((host, int(port))) as sock:  # half a body, then gone
        sock.sendall(b'POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"te')
    time.sleep(0.2)  # the server notices the hang-ups
    assert server.request("/health")[1]["translating"], "the busy batch ended too soon to tell"
    sending.join()
    while server.request("/health")[1]["queued"]:
        time.sleep(0.05)
    health = server.request("/health")[1]
    code, _, err = server.stop()
    assert health["translated"] == 64 and health["failed"] == 0
    assert code == 0 and "Traceback" not in err, err
