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
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from seq2seq.config import SearchConfig, ServeConfig, short
from seq2seq.errors import UserError, out_of_memory

from .batcher import Batcher, ModelThread, QueueFull, split_by
from .translator import Translation, Translator, best, checked_texts

NAMES = dict(cs="Czech", de="German", en="English", es="Spanish", fr="French", it="Italian")


class Refused(Exception):
    """A request the server will not take: its status and a one-line reason."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


# --- reading requests -----------------------------------------------------------------------


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
    (LibreTranslate's clients send either, and curl sends JSON as a form: a body that
    starts like JSON is JSON whatever its content type says). A client that takes longer than
    serve.body_seconds to send its body gets 408."""
    try:
        text = await asyncio.wait_for(
            read_body(request, config.max_body_bytes), config.body_seconds
        )
    except (TimeoutError, asyncio.TimeoutError):
        raise Refused(
            408, f"the body took over {config.body_seconds} s (serve.body_seconds)"
        ) from None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        raise Refused(415, "multipart forms are not read; send JSON or a URL-encoded form")
    looks_json = text.lstrip().startswith(("{", "["))
    if forms and kind != "application/json" and not looks_json:
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
    value = fields.get(key, default)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
        value = int(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Refused(
            400, f"field '{key}': expected an integer from {low} to {high}, got {short(value)}"
        )
    return value


def texts_field(fields: dict, key: str, limit: int) -> tuple[list[str], bool]:
    """The texts of a request (a list, or one string), and whether one string was sent."""
    if key not in fields:
        raise Refused(400, f"field '{key}' is missing")
    value = fields[key]
    if isinstance(value, str):
        return texts_field({key: [value]}, key, limit)[0], True
    if not isinstance(value, list):
        raise Refused(400, f"field '{key}': expected a list of strings, got {type(value).__name__}")
    if not value:
        raise Refused(400, f"field '{key}': expected at least one text, got an empty list")
    if len(value) > limit:
        raise Refused(413, f"field '{key}': {len(value)} texts; at most {limit} (serve.max_texts)")
    try:
        return checked_texts(value), False
    except UserError as e:  # "texts[3]: ..." -> "field 'q[3]': ..."
        index, message = str(e).split(": ", 1)
        raise Refused(400, f"field '{key}{index.removeprefix('texts')}': {message}") from None


def finite(score: float) -> float | None:
    """A score for JSON, which has no -inf (the score of a text no setting let end)."""
    return score if math.isfinite(score) else None


def joined(lines: list[list[Translation]], k: int) -> str:
    """The k-th best translation of each line (the best where there are fewer), as one text."""
    return "\n".join(hyps[k].text if k < len(hyps) else best(hyps) for hyps in lines)


# --- the application ------------------------------------------------------------------------


class Service:
    """The endpoints over one translator and its batcher."""

    def __init__(self, translator: Translator, config: ServeConfig, model: ModelThread):
        self.translator, self.config, self.model = translator, config, model
        self.batcher: Batcher | None = None  # made on the server's event loop
        self.started = time.monotonic()

    def languages(self) -> tuple[str, str]:
        return self.translator.src_lang or "auto", self.translator.tgt_lang or "auto"

    def check_pair(self, source: Any, target: Any) -> None:
        src, tgt = self.languages()
        for key, value, ours in (("source", source, src), ("target", target, tgt)):
            if value is not None and value not in (ours, "auto" if key == "source" else None):
                raise Refused(
                    400, f"field '{key}': this model translates {src} to {tgt}, got {short(value)}"
                )

    def settings(self, beam_size: int | None, n_best: int | None, asked: str) -> SearchConfig:
        """The model's search settings with a request's beam size and n-best (`asked`: the
        field that asked for the n best, for messages)."""
        changes = {}
        if n_best is not None:
            beam_size = beam_size or max(n_best, self.translator.search.beam_size)
            if n_best > beam_size:
                raise Refused(400, f"field 'n_best': expected at most beam_size ({beam_size})")
            changes["n_best"] = n_best
        if beam_size is not None:
            vocabulary = self.translator.model.vocab.tgt_size
            if beam_size > vocabulary:
                field = asked if n_best == beam_size else "beam_size"
                raise Refused(400, f"field '{field}': asks for more than the {vocabulary} pieces "
                                   "of the model's vocabulary")  # fmt: skip
            changes["beam_size"] = beam_size
        return self.translator.settings(changes)

    async def translate(self, request: Request, texts: list[str], settings: SearchConfig) -> list:
        """The n best of each text, or 413 or 503 when the queue cannot take them. A client
        that goes away meanwhile takes its texts out of the queue."""
        if len(texts) > self.config.max_queue:  # could never be taken: not worth a retry
            raise Refused(413, f"{len(texts)} texts; at most {self.config.max_queue} can wait")
        try:
            future = self.batcher.submit(texts, settings)
        except QueueFull as full:
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

    async def translate_lines(self, request, texts: list[str], settings: SearchConfig) -> list:
        """Translations of texts that may hold several lines, each line translated alone."""
        split = [text.split("\n") for text in texts]
        lines = [line for parts in split for line in parts]
        if len(lines) > self.config.max_texts:
            raise Refused(
                413, f"{len(lines)} lines; at most {self.config.max_texts} (serve.max_texts)"
            )
        results = await self.translate(request, lines, settings)
        return split_by(results, [len(parts) for parts in split])

    async def v1_translate(self, request: Request) -> JSONResponse:
        fields = await read_fields(request, self.config)
        unknown = set(fields) - {"texts", "beam_size", "n_best", "source", "target"}
        if unknown:
            raise Refused(
                400,
                f"unknown field {short(sorted(unknown)[0])}; "
                "expected texts, beam_size, n_best, source, target",
            )
        texts, _ = texts_field(fields, "texts", self.config.max_texts)
        self.check_pair(fields.get("source"), fields.get("target"))
        high = self.config.max_beam_size
        beam, n_best = (integer(fields, key, 1, high, None) for key in ("beam_size", "n_best"))
        settings = self.settings(beam, n_best, "n_best")
        results = await self.translate(request, texts, settings)
        answer = {
            "translations": [best(hyps) for hyps in results],
            "scores": [finite(hyps[0].score) if hyps else None for hyps in results],
        }
        if settings.n_best > 1:
            answer["n_best"] = [
                [{"text": t.text, "score": finite(t.score)} for t in hyps] for hyps in results
            ]
        return JSONResponse(answer)

    async def libretranslate(self, request: Request) -> JSONResponse:
        fields = await read_fields(request, self.config, forms=True)
        texts, single = texts_field(fields, "q", self.config.max_texts)
        for key in ("source", "target"):
            if not isinstance(fields.get(key), str):
                raise Refused(400, f"field '{key}': expected a language code")
        self.check_pair(fields["source"], fields["target"])
        if fields.get("format", "text") != "text":
            raise Refused(
                400, f"field 'format': only 'text' is translated, got {short(fields['format'])}"
            )
        alternatives = integer(fields, "alternatives", 0, self.config.max_beam_size - 1, 0)
        settings = self.settings(None, alternatives + 1 if alternatives else None, "alternatives")
        results = await self.translate_lines(request, texts, settings)
        texts = [[joined(lines, k) for k in range(alternatives + 1)] for lines in results]
        answer: dict[str, Any] = {"translatedText": [t[0] for t in texts]}
        if alternatives:
            answer["alternatives"] = [t[1:] for t in texts]
        if single:
            answer = {key: value[0] for key, value in answer.items()}
        if fields["source"] == "auto":
            detected = {"confidence": 100.0, "language": self.languages()[0]}
            answer["detectedLanguage"] = detected if single else [detected] * len(texts)
        return JSONResponse(answer)

    async def list_languages(self, request: Request) -> JSONResponse:
        src, tgt = self.languages()
        return JSONResponse(
            [
                {"code": src, "name": NAMES.get(src, src), "targets": [tgt]},
                {"code": tgt, "name": NAMES.get(tgt, tgt), "targets": []},
            ]
        )

    async def health(self, request: Request) -> JSONResponse:
        b, uptime = self.batcher, round(time.monotonic() - self.started, 1)
        counts = {"queued": b.queued, "translating": b.working, "translated": b.served}
        counts["failed"] = b.failed
        return JSONResponse({"status": "ok", **counts, "batches": b.batches, "uptime_s": uptime})


def answering(handler: Callable) -> Callable:
    """An endpoint whose refusals become one-line JSON errors with their status."""

    async def endpoint(request: Request) -> JSONResponse:
        try:
            return await handler(request)
        except Refused as e:
            return JSONResponse({"error": str(e)}, e.status, headers=e.headers)
        except ClientDisconnect:  # it went away: no one to answer
            return Response(status_code=499)
        except Exception as e:  # a bug, or the device out of memory: said, and logged
            traceback.print_exc()
            message = out_of_memory(e) or f"internal error: {type(e).__name__}"
            return JSONResponse({"error": message}, 500)

    return endpoint


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own refusals (no such path, wrong method) as one-line JSON too."""
    path, code = short(request.url.path), error.status_code
    method = short(request.method)
    messages = {404: f"no endpoint {path}", 405: f"method {method} not allowed on {path}"}
    return JSONResponse({"error": messages.get(code, error.detail)}, code, error.headers)


def application(service: Service) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher = Batcher(service.translator, service.config, service.model)
        task = service.batcher.start()
        yield
        task.cancel()

    routes = [
        Route("/v1/translate", answering(service.v1_translate), methods=["POST"]),
        Route("/translate", answering(service.libretranslate), methods=["POST"]),
        Route("/languages", answering(service.list_languages), methods=["GET"]),
        Route("/health", answering(service.health), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
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
        if server is not None and server.should_exit:  # a second signal: no more waiting
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # (its traceback)
            server.force_exit = True
        if server is not None:
            server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        translator, model = load(), ModelThread()
        app = application(Service(translator, config, model))
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=config.shutdown_seconds,
                limit_concurrency=config.max_connections,
            )
        )
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
