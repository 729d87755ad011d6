"""serve.py: the HTTP API on a tiny trained session (FastAPI's TestClient), every bad input's
status and one-line error, the bounded queue, and serve.py run as a user runs it."""
import base64
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx2 as httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import complete
import engine
import exports
import serve
from conftest import CPUINFO, REPO, run_main, smooth_photo, working_directory

HEIGHT, WIDTH = 45, 61


@pytest.fixture(scope="module")
def tiny_model(tiny_training):
    """(network, mean pixel, config) of the tiny trained session."""
    root, _ = tiny_training
    with working_directory(root):
        return exports.load_model("tiny")


def make_client(model, *flags, session="tiny"):
    args = serve.parse_args(["--session", session, *flags])
    return TestClient(serve.create_app(*model, args))


@pytest.fixture(scope="module")
def client(tiny_model):
    with make_client(tiny_model) as client:
        yield client


@pytest.fixture(scope="module")
def photo():
    return smooth_photo(np.random.default_rng(7), HEIGHT, WIDTH)


def encode(array, format="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


def decode(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def stroke(shape=(HEIGHT, WIDTH)):
    """A painted-looking hole: a thick diagonal band and a disc."""
    y, x = np.mgrid[:shape[0], :shape[1]]
    return (abs((y - 5) - 0.6 * (x - 8)) < 3) & (x > 8) & (x < 45) | (
        (y - 34) ** 2 + (x - 15) ** 2 < 25)


def post(client, photo, mask=None, name="photo.png", **fields):
    files = {"image": (name, photo if isinstance(photo, bytes) else encode(photo), "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask if isinstance(mask, bytes) else encode(
            mask.astype(np.uint8) * 255), "image/png")
    return client.post("/api/complete", files=files, data=fields)


def assert_error(response, status, message):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "\n" not in response.text
    assert response.json() == {"error": message}


def test_a_png_round_trip_keeps_every_pixel_outside_the_hole(client, photo):
    hole = stroke()
    for postprocess in ("none", "blend"):
        response = post(client, photo, hole, postprocess=postprocess)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.headers["x-filled-pixels"] == str(hole.sum())
        result = decode(response.content)
        assert result.shape == photo.shape
        assert np.array_equal(result[~hole], photo[~hole])
        assert (result[hole] != photo[hole]).any()


def test_the_server_and_complete_py_give_the_same_photo(tiny_model, tiny_training, tmp_path):
    """One function behind both, also for a large photo completed window by window."""
    root, _ = tiny_training
    photo = smooth_photo(np.random.default_rng(8), 200, 300)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    results = []
    for window in ("4000000", "20000"):  # the whole photo at once; a window around each hole
        with working_directory(root):
            assert complete.main(["--session", "tiny", "--input", str(tmp_path / "photo.png"),
                                  "--box", "5,10,20,12", "--box", "250,160,30,20", "--postprocess",
                                  "blend", "--max-pixels", window,
                                  "--output", str(tmp_path / "cli.png")]) == 0
        with make_client(tiny_model, "--window-pixels", window) as client:
            response = post(client, photo, boxes="5,10,20,12; 250,160,30,20", postprocess="blend")
        assert response.status_code == 200, response.text
        results.append(decode(response.content))
        assert np.array_equal(results[-1], np.asarray(Image.open(tmp_path / "cli.png")))
    assert not np.array_equal(*results)


def test_json_answers_hold_both_completions_as_base64_pngs(client, photo):
    hole = stroke()
    response = post(client, photo, hole, postprocess="blend", format="json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert {k: body[k] for k in ("width", "height", "filled_pixels", "postprocess", "message")} == {
        "width": WIDTH, "height": HEIGHT, "filled_pixels": int(hole.sum()),
        "postprocess": "blend", "message": None}
    assert body["seconds"] >= 0
    completed = decode(base64.b64decode(body["completed"]))
    blended = decode(base64.b64decode(body["blended"]))
    for result in (completed, blended):
        assert result.shape == photo.shape
        assert np.array_equal(result[~hole], photo[~hole])
    assert not np.array_equal(completed, blended)
    plain = post(client, photo, hole)
    assert np.array_equal(decode(plain.content), completed)
    assert post(client, photo, hole, format="json").json()["blended"] is None


def test_health_names_the_model_and_its_training(client, tiny_model):
    _, mean_pixel, _ = tiny_model
    health = client.get("/api/health").json()
    # To 4 decimals, as the README shows it (the export's glcic.json keeps it whole).
    assert health["mean_pixel"] == [round(float(v), 4) for v in mean_pixel]
    assert all(len(repr(v)) <= 6 for v in health["mean_pixel"])
    del health["mean_pixel"]
    assert health == {"model_loaded": True, "model": "session tiny", "session": "tiny",
                      "export": None, "image_size": 32, "busy": 0, "queue": 4,
                      "engine": "onnx" if engine.available()[0] else "tf",
                      "precision": "float32", "precision_why": health["precision_why"],
                      "max_upload_mb": 50, "max_pixels": 25_000_000, "window_pixels": 4_000_000,
                      "scale": "native", "trained_hole": 9.0}
    assert health["precision_why"] == "auto: this CPU has no native bfloat16"


def test_both_scales_through_the_api_and_the_servers_default(tiny_model, client, photo):
    """scale=auto completes a hole wider than the network's (9 px) shrunk, native at the
    photo's size: the same as complete.py's, the pixels outside the hole the photo's; a
    server started with --scale auto uses it when a request gives none."""
    hole = np.zeros(photo.shape[:2], bool)
    hole[10:34, 12:42] = True
    network, mean_pixel, config = tiny_model
    answers = {}
    for scale in ("auto", "native", "0.5"):
        response = post(client, photo, hole, scale=scale, format="json")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["scale"] == complete.parse_scale(scale)
        answers[scale] = decode(base64.b64decode(body["completed"]))
        assert np.array_equal(answers[scale][~hole], photo[~hole])
        expected, _ = complete.complete(network, photo, hole, mean_pixel,
                                        scale=complete.parse_scale(scale), trained_hole=9.0)
        np.testing.assert_array_equal(answers[scale], expected)
    assert not np.array_equal(answers["auto"], answers["native"])
    with make_client(tiny_model, "--scale", "auto") as auto_client:
        assert auto_client.get("/api/health").json()["scale"] == "auto"
        default = decode(post(auto_client, photo, hole).content)
    np.testing.assert_array_equal(default, answers["auto"])


def test_health_says_bfloat16_and_why_on_a_cpu_that_has_it(tiny_training, monkeypatch):
    root, _ = tiny_training
    monkeypatch.setenv("GLCIC_CPUINFO", os.path.join(CPUINFO, "avx512_bf16.txt"))
    with working_directory(root):
        model = exports.load_model("tiny")
    with TestClient(serve.create_app(*model, serve.parse_args(["--session", "tiny"]))) as client:
        health = client.get("/api/health").json()
    assert (health["engine"], health["precision"], health["precision_why"]) == (
        "tf", "bfloat16", "auto: this CPU computes bfloat16 natively (avx512_bf16)")


def test_an_export_is_served_under_its_folder_name(tiny_training, tmp_path, photo):
    root, _ = tiny_training
    folder = str(tmp_path / "compact")
    with working_directory(root):
        assert complete.main(["--session", "tiny", "--export", folder, "--float16"]) == 0
    model = exports.load_model(None, folder)
    args = serve.parse_args(["--model", folder])
    with TestClient(serve.create_app(*model, args)) as client:
        health = client.get("/api/health").json()
        assert (health["model"], health["session"], health["export"], health["image_size"]) == (
            f"export {folder}", None, folder, 32)
        hole = stroke()
        result = decode(post(client, photo, hole).content)
        assert np.array_equal(result[~hole], photo[~hole])


def test_the_page_and_the_docs_are_served_without_anything_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    docs = client.get("/docs").text
    assert "cdn." not in docs and "https://" not in docs
    asset = docs.split('src="')[1].split('"')[0]
    assert client.get(asset).status_code == 200
    spec = client.get("/openapi.json").json()
    fields = spec["paths"]["/api/complete"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]
    assert "image" in json.dumps(spec) and {"200", "400", "413", "422", "503"} <= set(
        spec["paths"]["/api/complete"]["post"]["responses"])
    assert fields


def test_an_empty_mask_returns_the_input_and_says_so(client, photo):
    empty = np.zeros(photo.shape[:2], bool)
    response = post(client, photo, empty)
    assert response.status_code == 200
    assert response.headers["x-message"] == serve.EMPTY_MASK
    assert np.array_equal(decode(response.content), photo)
    body = post(client, photo, empty, format="json", postprocess="blend").json()
    assert body["message"] == "the mask is empty, nothing to fill; returned the input"
    assert body["filled_pixels"] == 0
    assert np.array_equal(decode(base64.b64decode(body["blended"])), photo)


def truncated(photo, format):
    data = encode(photo, format)
    return data[:len(data) * 3 // 4]


BAD = [
    (dict(photo=b"hello", name="notes.txt", boxes="1,1,5,5"), 400,
     "image notes.txt: not an image (expected PNG, JPEG, WebP, ...)"),
    (dict(mask=np.zeros((8, 10), bool)), 400,
     "mask mask.png: 10x8 pixels, expected the image's size 61x45"),
    (dict(mask=b"GIF89a..."), 400, "mask mask.png: not an image (expected PNG, JPEG, WebP, ...)"),
    (dict(boxes="50,10,20,20"), 400,
     "boxes 50,10,20,20: expected a box of positive size inside the 61x45 image"),
    (dict(boxes="8,9"), 400, "boxes 8,9: expected X,Y,W,H (four integers)"),
    (dict(boxes=" ; "), 400, 'boxes: expected one or more boxes "x,y,w,h", separated by ";"'),
    (dict(), 400, 'give either mask (an image, white = hole) or boxes ("x,y,w,h;...")'),
    (dict(mask=np.ones((45, 61), bool), boxes="1,1,5,5"), 400,
     'give either mask (an image, white = hole) or boxes ("x,y,w,h;...")'),
    (dict(boxes="1,1,5,5", postprocess="sharpen"), 422,
     "postprocess: Input should be 'none' or 'blend'"),
    (dict(boxes="1,1,5,5", format="webp"), 422, "format: Input should be 'png' or 'json'"),
    (dict(boxes="1,1,5,5", scale="2"), 400,
     "scale 2: expected auto, native or a factor in (0, 1], such as 0.5"),
]


@pytest.mark.parametrize("fields, status, message", BAD)
def test_bad_input_is_a_4xx_with_a_one_line_error(client, photo, fields, status, message):
    fields = dict(fields)
    assert_error(post(client, fields.pop("photo", photo), **fields), status, message)


@pytest.mark.parametrize("format", ["PNG", "JPEG"])
def test_a_truncated_photo_is_a_400(client, photo, format):
    name = f"cut.{format.lower()}"
    response = post(client, truncated(photo, format), name=name, boxes="1,1,5,5")
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"image {name}: truncated or damaged (")


def test_a_request_without_an_image_and_an_unknown_path_are_json_errors(client):
    assert_error(client.post("/api/complete", data={"boxes": "1,1,5,5"}), 422,
                 "image: Field required")
    assert_error(client.get("/api/nothing"), 404, "Not Found")
    assert_error(client.delete("/api/health"), 405, "Method Not Allowed")


def test_photos_and_uploads_over_the_limits_are_413(tiny_model, photo):
    with make_client(tiny_model, "--max-pixels", "2000") as client:
        assert_error(post(client, photo, boxes="1,1,5,5"), 413,
                     "image photo.png: 61x45 pixels, over this server's limit of 2000 pixels")
        assert post(client, photo[:40, :50], boxes="1,1,5,5").status_code == 200
    with make_client(tiny_model, "--max-upload-mb", "0.001") as client:
        assert_error(post(client, photo, boxes="1,1,5,5"), 413,
                     f"request: {len(post_body(photo)) / 2**20:.3g} MB, over this server's"
                     " upload limit of 0.001 MB")


def test_a_chunked_upload_over_the_limit_is_413(tiny_model):
    """Without Content-Length the body is counted as it comes."""
    def chunks():
        for _ in range(4):
            yield b"x" * 1000
    with make_client(tiny_model, "--max-upload-mb", "0.001") as client:
        response = client.post("/api/complete", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=b"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "request: over this server's upload limit of 0.001 MB")


def post_body(photo):
    request = httpx.Request("POST", "http://x/", files={"image": ("photo.png", encode(photo),
                                                                   "image/png")},
                            data={"boxes": "1,1,5,5"})
    return request.read()


def test_a_full_queue_is_503_and_health_answers_while_the_network_runs(tiny_model, photo):
    """One request runs (its network blocked), one waits, a third finds the queue of 1 full."""
    release, running = threading.Event(), threading.Event()

    def network(inputs, training=False):
        running.set()
        assert release.wait(60)
        return inputs[..., :3]  # the hole filled with the mean pixel

    _, mean_pixel, config = tiny_model
    answers = []
    with make_client((network, mean_pixel, config), "--queue", "1") as client:
        def request():
            answers.append(post(client, photo, boxes="10,10,8,8"))

        def busy_becomes(count):
            deadline = time.monotonic() + 30
            while client.get("/api/health").json()["busy"] != count:
                assert time.monotonic() < deadline
                time.sleep(0.05)

        threads = [threading.Thread(target=request) for _ in range(2)]
        threads[0].start()
        assert running.wait(30)
        start = time.monotonic()
        assert client.get("/api/health").json()["busy"] == 1
        assert time.monotonic() - start < 2
        threads[1].start()
        busy_becomes(2)
        assert_error(post(client, photo, boxes="1,1,5,5"), 503,
                     "busy: 2 requests running or waiting (a queue of 1); try again shortly")
        release.set()
        for thread in threads:
            thread.join(60)
        assert [answer.status_code for answer in answers] == [200, 200]
        busy_becomes(0)
    mean = np.round(np.asarray(mean_pixel) * 255).astype(np.uint8)
    assert (decode(answers[0].content)[10:18, 10:18] == mean).all()


def test_a_missing_session_or_a_busy_port_is_one_line_and_status_2(tiny_training, capsys):
    root, _ = tiny_training
    assert run_main(serve, ["--session", "missing", "--port", "0"], root) == 2
    assert capsys.readouterr().err == (
        "error: --session missing: no readable session in saved_sessions/missing/ (train one"
        " with python train.py --session missing)\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_main(serve, ["--session", "tiny", "--port", port], root) == 2
    assert capsys.readouterr().err == (
        f"error: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use)\n")


@pytest.mark.parametrize("flags, message", [
    (["--queue", "-1"], "--queue -1: expected 0 or more"),
    (["--scale", "huge"], "--scale huge: expected auto, native or a factor in (0, 1], such as 0.5"),
    (["--max-pixels", "0"], "--max-pixels 0: expected a positive number"),
    (["--max-upload-mb", "-2.5"], "--max-upload-mb -2.5: expected a positive number"),
    (["--session", "a", "--model", "b"], "argument --model: not allowed with argument --session"),
])
def test_bad_flags_are_one_line_and_status_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit:
        serve.parse_args(flags)
    assert exit.value.code == 2
    assert capsys.readouterr().err.endswith(f"error: {message}\n")


def start_server(flags, cwd):
    """serve.py as a user starts it, on a free port; returns (process, its address) once its
    health answers."""
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "serve.py"), "--port", "0",
                                *flags], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    line = ""
    while "Open http" not in line:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready or process.poll() is not None:
            stop_server(process)
            pytest.fail(f"serve.py did not start: {process.stderr.read()[-3000:]}")
        line = process.stdout.readline()
    url = line.split("Open ")[1].split()[0]
    while True:
        try:
            if httpx.get(url + "api/health", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            assert time.monotonic() < deadline, "serve.py did not answer /api/health"
            time.sleep(0.1)


def stop_server(process):
    """Ctrl-C, as a user stops it; returns its exit status and what it printed on stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.returncode, process.stderr.read()


def test_serve_py_prints_its_address_serves_the_documented_requests_and_stops_on_ctrl_c(
        tiny_training, photo):
    root, _ = tiny_training
    process, url = start_server(["--session", "tiny"], root)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "api/health").json()["model"] == "session tiny"
        hole = stroke()
        files = {"image": ("photo.png", encode(photo)),
                 "mask": ("mask.png", encode(hole.astype(np.uint8) * 255))}
        response = httpx.post(url + "api/complete", files=files, data={"postprocess": "blend"},
                              timeout=60)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert np.array_equal(decode(response.content)[~hole], photo[~hole])
        response = httpx.post(url + "api/complete", files={"image": ("x.png", b"\x89PNG\r\n")},
                              data={"boxes": "1,1,2,2"})
        assert response.status_code == 400 and process.poll() is None
    finally:
        status, stderr = stop_server(process)
    assert status == 0, stderr
    assert "Traceback" not in stderr


LOG_LINE = re.compile(r"^(GET|POST) (/\S*) (\d{3}) (\d+) B (\d+\.\d\d) s$")


def raw_post(url, size, *headers):
    """A POST of `size` bytes sent whole before the answer is read, as simple clients do: the
    answer's (status, body)."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    head = "".join(f"{h}\r\n" for h in ("POST /api/complete HTTP/1.1", f"Host: {host}",
                                         "Content-Type: multipart/form-data; boundary=b",
                                         f"Content-Length: {size}", *headers))
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode() + b"\r\n" + b"x" * size)  # fails if the server resets
        answer = b""
        while True:
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"content-length: (\d+)", head, re.I)
            if length and len(body) >= int(length.group(1)):
                return int(head.split()[1]), body.decode()
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {answer!r}"
            answer += chunk


def test_an_upload_over_the_limit_gets_its_413_answer_from_serve_py(tiny_training, tmp_path,
                                                                     photo):
    """The body over --max-upload-mb is read and thrown away, so that the client, still sending,
    reads the 413 answer instead of a reset connection; one log line per request."""
    root, _ = tiny_training
    process, url = start_server(["--session", "tiny", "--max-upload-mb", "1"], root)
    expected = '{"error":"request: 4.29 MB, over this server\'s upload limit of 1 MB"}'
    try:
        for close in ([], ["Connection: close"]):  # keep-alive, and closed after the answer
            assert raw_post(url, 4_500_000, *close) == (413, expected)
        response = httpx.post(url + "api/complete", content=b"x" * 4_500_000, timeout=60,
                              headers={"content-type": "multipart/form-data; boundary=b"})
        assert response.status_code == 413 and response.text == expected
        curled = []
        if shutil.which("curl"):  # as curl sends it, waiting for 100 Continue or not
            (tmp_path / "big.png").write_bytes(b"x" * 4_500_000)
            for expect in ([], ["-H", "Expect:"]):
                done = subprocess.run(["curl", "-sS", *expect, "-F", "image=@big.png", "-F",
                                       "boxes=1,1,5,5", "-w", "\n%{http_code}",
                                       url + "api/complete"], cwd=tmp_path, capture_output=True,
                                      text=True, timeout=60)
                body, status = done.stdout.rsplit("\n", 1)
                assert (done.returncode, status, done.stderr) == (0, "413", "")
                assert re.fullmatch(r'\{"error":"request: 4\.29 MB, over this server\'s upload'
                                    r' limit of 1 MB"\}', body), body
                curled.append(len(body))
        hole = stroke()
        done = httpx.post(url + "api/complete", files={
            "image": ("photo.png", encode(photo)),
            "mask": ("mask.png", encode(hole.astype(np.uint8) * 255))}, timeout=60)
        assert done.status_code == 200 and process.poll() is None
    finally:
        status, stderr = stop_server(process)
    assert status == 0 and "Traceback" not in stderr, stderr
    lines = process.stdout.read().splitlines()
    # Every line is a request's (no access log of uvicorn's besides); the last ones are ours.
    assert all(LOG_LINE.match(line) for line in lines), lines
    ours = [LOG_LINE.match(line).groups()[:4] for line in lines[-4 - len(curled):]]
    assert ours == [("POST", "/api/complete", "413", str(len(expected)))] * (3 + len(curled)) + [
        ("POST", "/api/complete", "200", done.headers["content-length"])]
    assert all(line.startswith("GET /api/health 200 ") for line in lines[:-4 - len(curled)])


def test_serve_py_quiet_prints_no_line_per_request(tiny_training):
    root, _ = tiny_training
    process, url = start_server(["--session", "tiny", "--quiet"], root)
    try:
        assert httpx.get(url).status_code == 200
        assert httpx.get(url + "api/nothing").status_code == 404
    finally:
        status, stderr = stop_server(process)
    assert status == 0, stderr
    assert process.stdout.read() == "" and "Traceback" not in stderr
