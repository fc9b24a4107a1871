"""`nmt serve`: a model loaded once behind HTTP (Starlette on uvicorn).

Endpoints (docs/usage.md, serve): POST /v1/translate (our JSON), POST /translate and GET /languages
(LibreTranslate's), GET /health. Every answer is JSON; a refusal is {"error": "<one line>"}
with a 4xx status (413 for too much, 503 with Retry-After when the queue is full). Texts of
requests that arrive together are translated together (batcher.py). SIGTERM or Ctrl-C stops
listening, answers the requests in flight, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import queue
import re
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException as Refused
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from seq2seq.config import SearchConfig, ServeConfig, short
from seq2seq.errors import UserError, out_of_memory

from .batcher import Batcher, ModelThread, split_by
from .translator import Translation, Translator, best, checked_texts

NAMES = dict(cs="Czech", de="German", en="English", es="Spanish", fr="French", it="Italian")
V1_FIELDS = "texts, beam_size, n_best, source, target"  # as refusals list them


async def read_body(request: Request, limit: int) -> str:
    """The request body as text; too large or not UTF-8: refused. A body up to four times
    too large is read to its end first, so that its client, still sending, hears the 413
    instead of a broken connection."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else 0
    body, received = bytearray(), 0
    if size <= 4 * limit:
        async for part in request.stream():
            received += len(part)
            if received <= limit:
                body += part
            elif received > 4 * limit:
                break
    if max(size, received) > limit:
        raise Refused(413, f"request body over {limit} bytes (serve.max_body_bytes)")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Refused(400, f"request body is not valid UTF-8 (byte {e.start})") from None


async def read_fields(request: Request, config: ServeConfig, forms: bool = False) -> dict:
    """The request's fields: a JSON object, or with `forms`, also a URL-encoded form
    (LibreTranslate's clients send either; curl sends JSON as a form, so a body that starts like
    JSON is JSON whatever its content type says). A body slower than serve.body_seconds: 408."""
    seconds = config.body_seconds
    try:
        text = await asyncio.wait_for(read_body(request, config.max_body_bytes), seconds)
    except (TimeoutError, asyncio.TimeoutError):
        raise Refused(408, f"the body took over {seconds} s (serve.body_seconds)") from None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        raise Refused(415, "multipart forms are not read; send JSON or a URL-encoded form")
    if forms and kind != "application/json" and not text.lstrip().startswith(("{", "[")):
        try:
            form = parse_qs(text, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError as e:
            raise Refused(400, f"form field is not valid UTF-8 once decoded ({e.reason})") from None
        return {key: values if len(values) > 1 else values[0] for key, values in form.items()}
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as e:
        where = f"{e.msg} at character {e.pos}"
        raise Refused(400, f"request body is not valid JSON ({where})") from None
    except (ValueError, RecursionError) as e:  # a number of 4,300 digits; nesting too deep
        what = "nested too deeply" if isinstance(e, RecursionError) else short(str(e))
        raise Refused(400, f"request body is not JSON this server reads ({what})") from None
    if not isinstance(fields, dict):
        raise Refused(400, f"request body: expected a JSON object, got {type(fields).__name__}")
    return fields


def integer(fields: dict, key: str, low: int, high: int, default: int | None) -> int | None:
    """An optional integer field within [low, high]; form fields arrive as strings."""
    if (value := fields.get(key)) is None:  # absent, or JSON's null: the default
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        expected = f"an integer from {low} to {high}, got {short(value)}"
        raise Refused(400, f"field '{key}': expected {expected}")
    return value


def texts_field(fields: dict, key: str, limit: int) -> tuple[list[str], bool]:
    """The texts of a request (a list, or one string), and whether one string was sent."""
    if key not in fields:
        raise Refused(400, f"field '{key}' is missing")
    single = isinstance(fields[key], str)
    value = [fields[key]] if single else fields[key]
    if not isinstance(value, list):
        raise Refused(400, f"field '{key}': expected a list of strings, got {type(value).__name__}")
    if not value:
        raise Refused(400, f"field '{key}': expected at least one text, got an empty list")
    if len(value) > limit:
        raise Refused(413, f"field '{key}': {len(value)} texts; at most {limit} (serve.max_texts)")
    try:
        return checked_texts(value), single
    except UserError as e:  # "texts[3]: ..." -> "field 'q[3]': ..."
        index, message = str(e).split(": ", 1)
        raise Refused(400, f"field '{key}{index.removeprefix('texts')}': {message}") from None


def finite(score: float) -> float | None:
    """A score for JSON, which has no -inf (the score of a text no setting let end)."""
    return score if math.isfinite(score) else None


def joined(lines: list[list[Translation]], k: int) -> str:
    """The k-th best translation of each line (the best where there are fewer), as one text."""
    return "\n".join(hyps[k].text if k < len(hyps) else best(hyps) for hyps in lines)


class Service:
    """The endpoints over one translator and its batcher."""

    def __init__(self, translator: Translator, config: ServeConfig, batcher: Batcher):
        self.translator, self.config, self.batcher = translator, config, batcher
        self.src, self.tgt = translator.src_lang or "auto", translator.tgt_lang or "auto"
        self.started = time.monotonic()

    def check_pair(self, source: Any, target: Any) -> None:
        for key, value, ours in (("source", source, self.src), ("target", target, self.tgt)):
            if value is not None and value not in (ours, "auto" if key == "source" else None):
                pair = f"this model translates {self.src} to {self.tgt}"
                raise Refused(400, f"field '{key}': {pair}, got {short(value)}")

    def settings(self, beam_size: int | None, n_best: int | None, asked: str) -> SearchConfig:
        """The search settings with a request's beam size and n-best (`asked`: n-best's field)."""
        if n_best is not None:
            beam_size = beam_size or max(n_best, self.translator.search.beam_size)
            if n_best > beam_size:
                raise Refused(400, f"field 'n_best': expected at most beam_size ({beam_size})")
        vocabulary = self.translator.model.vocab.tgt_size
        if beam_size is not None and beam_size > vocabulary:
            field = asked if n_best == beam_size else "beam_size"
            message = f"asks for more than the {vocabulary} pieces of the model's vocabulary"
            raise Refused(400, f"field '{field}': {message}")
        changes = {"beam_size": beam_size, "n_best": n_best}
        return self.translator.settings({k: v for k, v in changes.items() if v is not None})

    async def translate(self, request: Request, texts: list[str], settings: SearchConfig) -> list:
        """The n best of each text, or 503 when the queue is full. A client that goes away
        meanwhile takes its texts out of the queue."""
        try:
            future = self.batcher.submit(texts, settings)
        except queue.Full as full:
            message = f"busy: {full.args[0]} texts are waiting (serve.max_queue); retry later"
            raise Refused(503, message, {"Retry-After": "1"}) from None

        async def gone() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watch = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({future, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if not future.done():
            future.cancel()
            raise ClientDisconnect()
        return future.result()

    async def v1_translate(self, request: Request) -> JSONResponse:
        fields = await read_fields(request, self.config)
        if unknown := sorted(set(fields) - set(V1_FIELDS.split(", "))):
            raise Refused(400, f"unknown field {short(unknown[0])}; expected {V1_FIELDS}")
        texts, _ = texts_field(fields, "texts", self.config.max_texts)
        self.check_pair(fields.get("source"), fields.get("target"))
        high = self.config.max_beam_size
        beam, n_best = (integer(fields, key, 1, high, None) for key in ("beam_size", "n_best"))
        settings = self.settings(beam, n_best, "n_best")
        results = await self.translate(request, texts, settings)
        scored = [[{"text": t.text, "score": finite(t.score)} for t in hyps] for hyps in results]
        answer = {"translations": [best(hyps) for hyps in results]}
        answer["scores"] = [hyps[0]["score"] if hyps else None for hyps in scored]
        if settings.n_best > 1:
            answer["n_best"] = scored
        return JSONResponse(answer)

    async def libretranslate(self, request: Request) -> JSONResponse:
        fields = await read_fields(request, self.config, forms=True)
        texts, single = texts_field(fields, "q", self.config.max_texts)
        for key in ("source", "target"):
            if not isinstance(fields.get(key), str):
                raise Refused(400, f"field '{key}': expected a language code")
        self.check_pair(fields["source"], fields["target"])
        if fields.get("format") not in (None, "text"):
            got = short(fields["format"])
            raise Refused(400, f"field 'format': only 'text' is translated, got {got}")
        alternatives = integer(fields, "alternatives", 0, self.config.max_beam_size - 1, 0)
        settings = self.settings(None, alternatives + 1 if alternatives else None, "alternatives")
        split = [text.split("\n") for text in texts]  # each line is translated alone
        lines, most = [line for parts in split for line in parts], self.config.max_texts
        if len(lines) > most:
            raise Refused(413, f"{len(lines)} lines; at most {most} (serve.max_texts)")
        results = await self.translate(request, lines, settings)
        paragraphs = split_by(results, [len(parts) for parts in split])
        texts = [[joined(parts, k) for k in range(alternatives + 1)] for parts in paragraphs]
        answer: dict[str, Any] = {"translatedText": [t[0] for t in texts]}
        if alternatives:
            answer["alternatives"] = [t[1:] for t in texts]
        if single:
            answer = {key: value[0] for key, value in answer.items()}
        if fields["source"] == "auto":
            detected = {"confidence": 100.0, "language": self.src}
            answer["detectedLanguage"] = detected if single else [detected] * len(texts)
        return JSONResponse(answer)

    async def list_languages(self, request: Request) -> JSONResponse:
        rows = [(self.src, [self.tgt]), (self.tgt, [])]  # LibreTranslate's: each with its targets
        return JSONResponse([{"code": c, "name": NAMES.get(c, c), "targets": t} for c, t in rows])

    async def health(self, request: Request) -> JSONResponse:
        b, uptime = self.batcher, round(time.monotonic() - self.started, 1)
        counts = dict(queued=b.queued, translating=b.working, translated=b.served, failed=b.failed)
        return JSONResponse({"status": "ok", **counts, "batches": b.batches, "uptime_s": uptime})


def answering(handler: Callable) -> Callable:
    """An endpoint whose errors become one-line JSON errors too (refusals: http_error)."""

    async def endpoint(request: Request) -> JSONResponse:
        try:
            return await handler(request)
        except Refused:
            raise
        except ClientDisconnect:  # it went away: no one to answer
            return Response(status_code=499)
        except Exception as e:  # a bug, or the device out of memory: said, and logged
            traceback.print_exc()
            message = out_of_memory(e) or f"internal error: {type(e).__name__}"
            return JSONResponse({"error": message}, 500)

    return endpoint


async def http_error(request: Request, error: Refused) -> JSONResponse:
    """Refusals, ours and Starlette's own (no such path, wrong method), as one-line JSON."""
    path, method, code = short(request.url.path), short(request.method), error.status_code
    messages = {404: f"no endpoint {path}", 405: f"method {method} not allowed on {path}"}
    return JSONResponse({"error": messages.get(code, error.detail)}, code, error.headers)


def application(service: Service) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = service.batcher.start()
        yield
        task.cancel()

    routes = [
        Route("/v1/translate", answering(service.v1_translate), methods=["POST"]),
        Route("/translate", answering(service.libretranslate), methods=["POST"]),
        Route("/languages", answering(service.list_languages), methods=["GET"]),
        Route("/health", answering(service.health), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Refused: http_error})
    app.router.redirect_slashes = False  # a redirect would name the Host the client sent
    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), or a UserError saying why not. It is made
    with the TCP protocol named, as getaddrinfo gives it: asyncio turns Nagle's algorithm off
    only on such sockets, and with it on, each answer waited 40 ms for the client's ACK."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        raise UserError(f"serve: cannot listen on {host}:{port} ({e.strerror or e})") from None


def serve(config: ServeConfig, load: Callable[[], Translator], log: Callable = print) -> None:
    """Listen (first, so that a taken port fails before the model loads), load the model,
    and answer requests until SIGTERM or Ctrl-C, then finish the ones in flight. A signal
    while the model loads stops the server once it is loaded; a second one at once."""
    import uvicorn

    sock = listen(config.host, config.port)
    host, port = sock.getsockname()[:2]
    signals: list[int] = []
    server = None

    def stop(signum, frame) -> None:  # uvicorn stops listening, then answers what it holds
        signals.append(signum)
        if server is None and len(signals) > 1:
            raise KeyboardInterrupt
        if server is not None:
            if server.should_exit:  # a second signal: no more waiting
                logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # (its traceback)
                server.force_exit = True
            server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        translator, model = load(), ModelThread()
        app = application(Service(translator, config, Batcher(translator, config, model)))
        options = {"log_level": "warning", "access_log": False}
        options["timeout_graceful_shutdown"] = config.shutdown_seconds
        options["limit_concurrency"] = config.max_connections
        server = uvicorn.Server(uvicorn.Config(app, **options))
        server.should_exit = bool(signals)
        src, tgt, beam = translator.src_lang, translator.tgt_lang, translator.search.beam_size
        log(f"serve: {src} -> {tgt}, beam {beam}, {translator.precision_note}")
        shown = f"[{host}]" if ":" in host else host
        log(f"serve: listening on http://{shown}:{port} (Ctrl-C or SIGTERM stops)")
        http = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http")
        http.start()
        model.work_until(lambda: not http.is_alive())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log("serve: stopped")
