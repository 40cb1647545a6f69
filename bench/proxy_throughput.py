"""Download throughput through River's proxy against the same download straight from the
container's port, in the same run, interleaved.

    .venv/bin/python bench/proxy_throughput.py [--mb 512] [-n 3] [--image river-test-python]

A real cluster on loopback: a Jupyter host with River and one docker runner. A container
task serves MB megabytes from memory over HTTP (Python's http.server, 1 MiB writes). Each
round downloads it twice with the same bare socket client (reads into one buffer, so the
client costs the same on both paths):

* direct: http://CONTAINER_IP:PORT/blob, the floor (what a process on the runner gets);
* proxy:  http://HOST/river/proxy/TASK/PORT/blob with a River token: host (jupyter-server-
  proxy handler, streamed) -> runner port-forward (spliced) -> container.

Prints MB/s per path and the ratio proxy/direct (target >= 0.5).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster import Cluster, wait_for  # noqa: E402

PORT = 8765
SERVER = r"""
import http.server, sys
SIZE = int(sys.argv[1]) * 1024 * 1024
CHUNK = b"\0" * (1 << 20)
class Blob(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(SIZE))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        for _ in range(SIZE // len(CHUNK)):
            self.wfile.write(CHUNK)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), Blob).serve_forever()
"""


def download(url: str, headers: dict[str, str]) -> tuple[int, float]:
    """GET url with a bare socket; (bytes received, seconds from request to last byte)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    buffer = bytearray(4 << 20)
    view = memoryview(buffer)
    with socket.create_connection((parts.hostname, parts.port or 80)) as sock:
        start = time.perf_counter()
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        total = 0
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            total += n
        elapsed = time.perf_counter() - start
    return total, elapsed  # (total counts the response head too: a few hundred bytes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("-n", type=int, default=3, help="rounds (each path once per round)")
    parser.add_argument("--image", default="river-test-python")
    args = parser.parse_args()

    client = docker.from_env(version="auto")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), heartbeat_interval=1.0)
        cluster.start_host()
        try:
            cluster.start_runner(
                "bench-proxy", "--backend", "docker", "--default-image", args.image
            )
            task = cluster.submit(
                command=["python3", "-c", SERVER, str(args.mb), str(PORT)], cores=0
            )
            cluster.wait_task(task["id"], "running", timeout=60)
            container = next(
                c for c in client.containers.list(filters={"label": f"river.task_id={task['id']}"})
            )
            address = next(
                n["IPAddress"]
                for n in container.attrs["NetworkSettings"]["Networks"].values()
                if n.get("IPAddress")
            )
            direct = f"http://{address}:{PORT}/blob"
            proxied = f"{cluster.url}/river/proxy/{task['id']}/{PORT}/blob"
            auth = {"Authorization": f"token {cluster.token}"}

            def answers() -> bool:
                with httpx.stream("GET", proxied, headers=auth) as response:
                    return response.status_code == 200

            wait_for(answers, 30, what="the blob server through the proxy")
            expected = args.mb * 1024 * 1024
            rates: dict[str, list[float]] = {"direct": [], "proxy": []}
            download(direct, {})  # warm up both paths once
            download(proxied, auth)
            for _ in range(args.n):
                for name, url, headers in (("direct", direct, {}), ("proxy", proxied, auth)):
                    total, seconds = download(url, headers)
                    if total < expected:
                        raise SystemExit(f"{name}: got {total} bytes, expected {expected}+")
                    rates[name].append(expected / seconds / 1e6)
            cluster.request("POST", f"/river/api/tasks/{task['id']}/kill")
        finally:
            cluster.close()
    direct_mb = statistics.median(rates["direct"])
    proxy_mb = statistics.median(rates["proxy"])
    print(f"download of {args.mb} MiB, {args.n} rounds, medians:")
    print(f"  direct from the container port   {direct_mb:8.0f} MB/s  {_all(rates['direct'])}")
    print(f"  through /river/proxy/...         {proxy_mb:8.0f} MB/s  {_all(rates['proxy'])}")
    print(f"  ratio proxy/direct               {proxy_mb / direct_mb:8.2f}  (target >= 0.5)")
    return 0


def _all(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]"


if __name__ == "__main__":
    raise SystemExit(main())
