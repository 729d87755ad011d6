"""A web page and an HTTP API for completing photos: paint the hole, get the photo back.

    python serve.py --session NAME        # then open the address it prints
    python serve.py --model exported/ --host 0.0.0.0 --port 8080
    python serve.py                       # the pretrained model in pretrained/wallpapers

    GET  /                 the page: open a photo, paint the hole, Complete, download
    POST /api/complete     multipart: image, and mask (white = hole) or boxes ("x,y,w,h;...");
                           optional postprocess (none | blend) and format (png | json)
    GET  /api/health       the model: its session or export, the size it was trained at, its
                           mean pixel, what runs it (onnx or tf); how busy the server is
    GET  /docs             the API, as FastAPI documents it

Photos are completed at their own size by the same function as complete.py's (windows around
the holes for large photos). One model, one worker thread: requests wait in a bounded queue
(--queue) and the server keeps answering while the network runs. A request the client can fix
is answered with a 4xx status and a one-line JSON error {"error": "..."}. Each request answered
is one line on stdout, `POST /api/complete 200 183245 B 3.16 s` (unless --quiet).
"""
import asyncio
import base64
import concurrent.futures
import io
import os
import socket
import sys
import threading
import time
from typing import Annotated, Literal

import numpy as np

import runtime  # noqa: F401  (settings TensorFlow reads at import)
import uvicorn
from fastapi import File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

import complete
import config as cfg
import engine
import exports
import utils
from data_loader import load_rgb
from utils import UserError

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.html")
# The page is one file with its script and style inline; nothing else may load.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline';"
               " img-src data: blob:; connect-src 'self' blob:; base-uri 'none';"
               " form-action 'none'")
EMPTY_MASK = "the mask is empty, nothing to fill; returned the input"
ERRORS = {  # for /docs
    400: "bad input: not an image, a truncated file, a mask of another size, bad boxes",
    413: "the upload or the photo is over this server's limits",
    422: "a form field missing or of the wrong kind",
    503: "the server's queue is full; try again shortly"}


class BadRequest(UserError):
    """A request the client can fix: answered with `http_status` and {"error": message}."""

    def __init__(self, message, http_status=400):
        super().__init__(message)
        self.http_status = http_status


# ---------------------------------------------------------------------------------------------
# One request's work, in the worker thread: uploads to arrays, the completion, arrays to PNGs


def open_upload(data, field, filename, max_pixels):
    """An uploaded image opened (not decoded yet), its size checked; and its name for errors."""
    name = f"{field} {filename}" if filename else field
    try:
        img = Image.open(io.BytesIO(data))
    except Exception:  # whatever the bytes are, PIL cannot make an image of them
        raise BadRequest(f"{name}: not an image (expected PNG, JPEG, WebP, ...)")
    if img.width * img.height > max_pixels:
        raise BadRequest(f"{name}: {img.width}x{img.height} pixels, over this server's limit of"
                         f" {max_pixels} pixels", 413)
    return img, name


def decode(name, read):
    try:
        return read()
    except Exception as error:  # a damaged file can fail anywhere in the decoder
        raise BadRequest(f"{name}: truncated or damaged ({error})")


def read_photo(data, filename, max_pixels):
    """The photo as uint8 RGB (H, W, 3), upright as its EXIF orientation says (like browsers)."""
    _, name = open_upload(data, "image", filename, max_pixels)
    return decode(name, lambda: load_rgb(io.BytesIO(data)))


def read_hole(data, filename, shape, max_pixels):
    """The hole (bool H x W): the white pixels of a mask of the photo's size."""
    img, name = open_upload(data, "mask", filename, max_pixels)
    if img.size != (shape[1], shape[0]):
        raise BadRequest(f"{name}: {img.width}x{img.height} pixels, expected the image's size"
                         f" {shape[1]}x{shape[0]}")
    return decode(name, lambda: np.asarray(img.convert("L")) > 127)


def read_boxes(text, shape):
    boxes = [box.strip() for box in text.split(";") if box.strip()]
    if not boxes:
        raise BadRequest('boxes: expected one or more boxes "x,y,w,h", separated by ";"')
    return complete.box_mask(boxes, shape, flag="boxes")


def png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def answer(network, mean_pixel, args, image, mask, boxes, postprocess, format, scale=None):
    """Decode, check, complete and encode one request. `image` and `mask` are (bytes, file name);
    the answer is the PNG of the result, or JSON with the completed photo (the network's pixels
    in the hole, the photo's elsewhere) and, with postprocess=blend, the blended one."""
    scale = args.scale if scale is None else complete.parse_scale(scale, "scale")
    photo = read_photo(*image, args.max_pixels)
    hole = read_hole(*mask, photo.shape[:2], args.max_pixels) if mask else read_boxes(
        boxes, photo.shape[:2])
    start = time.perf_counter()
    message = None
    if hole.any():
        completed, _, blended = complete.complete_photo(network, photo, hole, mean_pixel,
                                                        postprocess, args.window_pixels, scale,
                                                        args.trained_hole)
    else:
        completed, blended, message = photo, photo if postprocess == "blend" else None, EMPTY_MASK
    seconds = round(time.perf_counter() - start, 3)
    filled = int(hole.sum())
    if format == "png":
        headers = {"X-Filled-Pixels": str(filled), "X-Seconds": str(seconds)}
        return Response(png(completed if blended is None else blended), media_type="image/png",
                        headers=headers | ({"X-Message": message} if message else {}))
    return JSONResponse({
        "width": photo.shape[1], "height": photo.shape[0], "filled_pixels": filled,
        "postprocess": postprocess, "scale": scale, "seconds": seconds, "message": message,
        "completed": base64.b64encode(png(completed)).decode(),
        "blended": None if blended is None else base64.b64encode(png(blended)).decode()})


# ---------------------------------------------------------------------------------------------
# The application


def error(status, message, headers=None):
    return JSONResponse({"error": message}, status, headers=headers)


async def drain(receive):
    """Read the rest of a request's body and throw it away."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def limit_uploads(app, max_bytes, limit_mb):
    """ASGI middleware: a request body over max_bytes is answered 413 {"error": ...}, after
    the rest of it has been read and thrown away (never held): a server that answers and closes
    while the client still sends resets the connection, and the client never reads the answer.
    A client that waits for "100 Continue" (curl's Expect) is answered at once instead, and
    sends nothing. Without Content-Length (chunked), the body is counted as the form is read."""
    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = Headers(scope=scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            if headers.get("expect", "").lower() != "100-continue":
                await drain(receive)
            answer = error(413, f"request: {int(length) / 2**20:.3g} MB, over this server's"
                                f" upload limit of {limit_mb:g} MB")
            return await answer(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                if message.get("more_body", False):
                    await drain(receive)
                raise HTTPException(413, f"request: over this server's upload limit of"
                                         f" {limit_mb:g} MB")
            return message
        await app(scope, counted, send)
    return middleware


def logged(app):
    """ASGI middleware: one line on stdout per request answered, `POST /api/complete 200 183245
    B 3.16 s` (method, path, status, bytes of the answer's body, seconds until it was sent)."""
    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        start, status, size = time.perf_counter(), "-", 0

        async def sending(message):
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)
        try:
            await app(scope, receive, sending)
        finally:
            print(f"{scope['method']} {scope['path']} {status} {size} B"
                  f" {time.perf_counter() - start:.2f} s", flush=True)
    return middleware


def add_error_handlers(app):
    """Every error as a one-line JSON {"error": "..."} with its status."""
    @app.exception_handler(UserError)  # a BadRequest, or complete.py's checks
    async def bad_request(request, exc):
        return error(getattr(exc, "http_status", 400), str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_form(request, exc):
        return error(422, "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request, exc):  # a bug: logged with its traceback, answered in JSON
        return error(500, f"internal error ({type(exc).__name__}: {exc})")


def create_app(network, mean_pixel, config, args):
    """The FastAPI application serving `network`: the page, /api/complete and /api/health."""
    with open(PAGE, encoding="utf-8") as f:
        page = f.read()
    args.trained_hole = complete.trained_hole_size(config)  # what --scale auto aims at
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="network")
    lock = threading.Lock()
    busy = [0]  # requests running or waiting for the worker
    app = FastAPIOffline(title="glcic", version="1", description=(
        "Globally and Locally Consistent Image Completion: paint a hole in a photo, get the photo"
        f" back completed at its own size. Serving {model_name(args)}. Every error is a one-line"
        ' JSON {"error": "..."}.'))

    add_error_handlers(app)
    app.add_middleware(limit_uploads, max_bytes=int(args.max_upload_mb * 2**20),
                       limit_mb=args.max_upload_mb)

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/api/health", summary="The model served, and how busy the server is")
    async def health():
        return {"model_loaded": True, "model": model_name(args), "session": args.session,
                "export": args.model or (None if args.session else exports.PRETRAINED_NAME),
                "image_size": config.image_size, "engine": engine.name_of(network),
                "precision": engine.precision_of(network),
                "precision_why": getattr(network, "precision_why", ""),
                "mean_pixel": utils.rounded(mean_pixel),
                "busy": busy[0], "queue": args.queue, "max_upload_mb": args.max_upload_mb,
                "max_pixels": args.max_pixels, "window_pixels": args.window_pixels,
                "scale": args.scale, "trained_hole": args.trained_hole}

    @app.post("/api/complete", summary="Complete a photo's hole", response_class=Response,
              responses={200: {"content": {"image/png": {}, "application/json": {}},
                               "description": "the completed photo as PNG (format=png), or JSON"
                                              " with base64 PNGs (format=json)"},
                         **{status: {"description": text, "content": {"application/json": {
                             "example": {"error": text}}}} for status, text in ERRORS.items()}})
    async def complete_photo(
            image: Annotated[UploadFile, File(description="the photo: PNG, JPEG, WebP, ...")],
            mask: Annotated[UploadFile | None, File(
                description="an image of the photo's size whose white pixels are the hole")] = None,
            boxes: Annotated[str | None, Form(
                description='rectangular holes instead of a mask: "x,y,w,h;x,y,w,h" in'
                            ' pixels')] = None,
            postprocess: Annotated[Literal["none", "blend"], Form(
                description="blend: the paper's post-processing (fast marching, then Poisson"
                            " blending)")] = "none",
            scale: Annotated[str | None, Form(
                description="auto: each group of holes completed at the resolution where its"
                            " largest hole is as wide as the holes the network was trained on,"
                            " the fill brought back to full size; native: at the photo's own"
                            " resolution; or a factor in (0, 1] (default: the server's"
                            " --scale)")] = None,
            format: Annotated[Literal["png", "json"], Form(
                description="png: the result as image/png; json: {width, height,"
                            " filled_pixels, seconds, message, completed, blended} with base64"
                            " PNGs")] = "png"):
        """The photo with its hole filled, at its own size: the network's pixels in the hole,
        the photo's exactly elsewhere. Give either `mask` or `boxes`. An empty mask returns the
        input, and says so (`X-Message` header, or `message` in JSON)."""
        if (mask is None) == (boxes is None):
            raise BadRequest('give either mask (an image, white = hole) or boxes ("x,y,w,h;...")')
        uploads = [(await f.read(), f.filename) for f in (image, mask) if f is not None]
        with lock:
            if busy[0] > args.queue:
                raise BadRequest(f"busy: {busy[0]} requests running or waiting (a queue of"
                                 f" {args.queue}); try again shortly", 503)
            busy[0] += 1
        try:
            return await asyncio.wrap_future(worker.submit(
                answer, network, mean_pixel, args, uploads[0], uploads[1] if mask else None,
                boxes, postprocess, format, scale))
        finally:
            with lock:
                busy[0] -= 1

    return app


def model_name(args):
    if args.session:
        return f"session {args.session}" + (
            f" at iteration {args.iteration}" if args.iteration is not None else "")
    return f"export {args.model or exports.PRETRAINED_NAME}"


# ---------------------------------------------------------------------------------------------
# The command line


def listen(host, port):
    """A socket bound to host:port, so that a port in use is one line before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there"
                        f" ({error.strerror or error})")
    return sock


def address(sock):
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "localhost", "::": "localhost"}.get(host, host)
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def parse_args(argv):
    parser = cfg.ArgumentParser(description=__doc__.split("\n")[0])
    exports.add_model_flags(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for every interface (default:"
                             " 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000; 0 for any free one")
    parser.add_argument("--max-upload-mb", type=float, default=50, metavar="MB",
                        help="largest request (photo + mask) accepted, in MB (default: 50)")
    parser.add_argument("--max-pixels", type=int, default=25_000_000, metavar="N",
                        help="largest photo accepted, in pixels (default: 25000000)")
    parser.add_argument("--window-pixels", type=int, default=4_000_000, metavar="N",
                        help="larger photos are completed window by window around the holes,"
                             " like complete.py --max-pixels (default: 4000000)")
    parser.add_argument("--scale", default="native", metavar="auto|native|F",
                        help="the scale requests complete at unless they give their own, as"
                             " complete.py --scale (default: native)")
    parser.add_argument("--queue", type=int, default=4, metavar="N",
                        help="requests that may wait while one completes; more are answered 503"
                             " (default: 4)")
    parser.add_argument("--quiet", action="store_true",
                        help="no line per request (method, path, status, bytes, seconds) on"
                             " stdout")
    args = parser.parse_args(argv)
    exports.check_model_flags(parser, args)
    limits = {"--max-upload-mb": args.max_upload_mb, "--max-pixels": args.max_pixels,
              "--window-pixels": args.window_pixels}
    for flag, value in limits.items():
        if value <= 0:
            parser.error(f"{flag} {value:g}: expected a positive number")
    if args.queue < 0:
        parser.error(f"--queue {args.queue}: expected 0 or more")
    try:
        args.scale = complete.parse_scale(args.scale)
    except UserError as error:
        parser.error(str(error))
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        sock = listen(args.host, args.port)
        network, mean_pixel, config = exports.load_model(args.session, args.model,
                                                         args.iteration, args.engine,
                                                         args.precision)
    except UserError as error:
        return utils.print_error(error)
    app = create_app(network, mean_pixel, config, args)
    print(f"Serving {model_name(args)} (trained at {config.image_size} px) on"
          f" {engine.describe(network)}. Open {address(sock)}"
          f" in a browser (the API: {address(sock)}docs). Ctrl-C stops.", flush=True)
    server = uvicorn.Server(uvicorn.Config(app if args.quiet else logged(app),
                                           log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn raises the Ctrl-C again once it has stopped
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
