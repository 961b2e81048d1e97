"""Mixed traffic on shared keep-alive connections: fast path, bodies, streams, errors, swaps."""

from __future__ import annotations

import http.client
import json
import random
import threading

import pytest
from aiohttp import web
from edge_helpers import echo_app, table


@pytest.mark.timeout(40)
def test_mixed_traffic_keeps_every_answer_right(upstreams, edges):
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(int(request.query.get("n", "3"))):
            await resp.write(b"%d," % i)
        await resp.write_eof()
        return resp

    a, b = upstreams(echo_app(stream=stream)), upstreams(echo_app(stream=stream))
    edge = edges(table(hello=[a.url, b.url], empty=[]))
    failures: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        try:
            for i in range(40):
                kind = rng.choice(["get", "get", "get", "post", "stream", "404", "503", "head"])
                if kind == "get":
                    conn.request("GET", f"/hello/g{i}?s={seed}")
                    want, check = 200, lambda body, i=i: json.loads(body)["target"] == \
                        f"/g{i}?s={seed}"
                elif kind == "post":
                    size = rng.randrange(1, 70000)
                    conn.request("POST", "/hello/p", body=rng.randbytes(size))
                    want, check = 200, lambda body, n=size: json.loads(body)["body_len"] == n
                elif kind == "stream":
                    conn.request("GET", "/hello/stream?n=4")
                    want, check = 200, lambda body: body == b"0,1,2,3,"
                elif kind == "head":
                    conn.request("HEAD", "/hello/h")
                    want, check = 200, lambda body: body == b""
                elif kind == "404":
                    conn.request("GET", "/ghost/x")
                    want, check = 404, lambda body: "error" in json.loads(body)
                else:
                    conn.request("GET", "/empty/x")
                    want, check = 503, lambda body: "error" in json.loads(body)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != want or not check(body):
                    failures.append(f"{kind}: {resp.status} {body[:80]!r}")
        except Exception as exc:
            failures.append(f"client {seed}: {exc!r}")
        finally:
            conn.close()

    def swapper(stop: threading.Event) -> None:
        i = 0
        while not stop.wait(0.005):
            urls = [[a.url, b.url], [b.url], [a.url]][i % 3]
            edge.set_routes(table(hello=urls, empty=[]))
            i += 1

    stop = threading.Event()
    swap = threading.Thread(target=swapper, args=(stop,))
    swap.start()
    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(12)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(30)
    stop.set()
    swap.join(5)
    assert failures == []
