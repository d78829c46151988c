"""How fast the fake FCM server answers, and how fast each way of sending per-token pushes goes.

The fakes run in their own process (as in bench/fanout.py); this process drives, one after the
other and for several rounds, N per-token sends with the same number in flight through:

- ``raw-aiohttp``: bare aiohttp POSTs of a body encoded once: what the fake answers at most from one
  client sharing the machine with it; the fake's CPU time per message gives its ceiling on a core
  of its own (printed),
- ``aiohttp``, ``httpx-h1``: the channel's own path (firebase-admin encodes each message) over
  pooled keep-alive HTTP/1.1 with aiohttp or with httpx,
- ``channel``: `FCMPush.send` as the dispatcher calls it,
- ``send_each_async``: firebase-admin's own path, 100 messages a call.

Prints messages/s and the CPU µs per message of the client and of the fake. The fake (aiohttp's
server) speaks HTTP/1.1 only, no h2c: ``httpx-h2`` (the channel's path over httpx with HTTP/2, all
in flight multiplexed on one connection, prior knowledge) runs against a bare h2c answerer in a
process of its own (`h2c_serve`, the `h2` library: it only answers 200, so only the client's cost
compares).

    python bench/fcm_ceiling.py [--n 20000] [--inflight 100] [--rounds 3] [--only a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alertd import channels, demo, model  # noqa: E402
from alertd.channels import fcm_client, fcm_push  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def message(i: int) -> model.Message:
    return model.Message(delivery_id=i, alert_id="bench", kind=model.Kind.PUSH, to=f"ceiling-{i:07d}",
                         title="Alerte", body="Mise à l'abri immédiate. Fermez portes et fenêtres.",
                         data={"severity": "Severe"}, command="send")


def url(fakes: str) -> str:
    return f"{fakes}/v1/projects/{demo.PROJECT_ID}/messages:send"


async def pump(n: int, inflight: int, one) -> None:
    queue = iter(range(n))

    async def worker():
        for i in queue:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(inflight)))


async def raw_aiohttp(fakes: str, n: int, inflight: int) -> None:
    body = json.dumps({"message": fcm_client.encode(message(0))}).encode()
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as http:
        async def one(i):
            async with http.post(url(fakes), data=body, headers=headers) as resp:
                await resp.read()
        await pump(n, inflight, one)


async def via_aiohttp(fakes: str, n: int, inflight: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=inflight)) as http:
        async def one(i):
            payload = json.dumps({"message": fcm_client.encode(message(i))}).encode()
            async with http.post(url(fakes), data=payload, headers={"Content-Type": "application/json"}) as resp:
                json.loads(await resp.read())
        await pump(n, inflight, one)


async def via_httpx_h1(fakes: str, n: int, inflight: int) -> None:
    limits = httpx.Limits(max_connections=inflight, max_keepalive_connections=inflight)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10, pool=None)) as http:
        async def one(i):
            payload = json.dumps({"message": fcm_client.encode(message(i))}).encode()
            resp = await http.post(url(fakes), content=payload, headers={"Content-Type": "application/json"})
            resp.json()
        await pump(n, inflight, one)


async def via_httpx_h2(h2c: str, n: int, inflight: int) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, timeout=httpx.Timeout(10, pool=None)) as http:
        async def one(i):
            payload = json.dumps({"message": fcm_client.encode(message(i))}).encode()
            resp = await http.post(url(h2c), content=payload, headers={"Content-Type": "application/json"})
            resp.json()
        await pump(n, inflight, one)


def h2c_serve(port: int) -> None:
    """Answer every HTTP/2 request (prior knowledge, no TLS) with FCM's 200."""
    import h2.config
    import h2.connection
    import h2.events

    class Answerer(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            self.h2.initiate_connection()
            transport.write(self.h2.data_to_send())

        def data_received(self, data):
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    body = b'{"name":"projects/p/messages/1"}'
                    self.h2.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                          ("content-length", str(len(body)))])
                    self.h2.send_data(event.stream_id, body, end_stream=True)
            self.transport.write(self.h2.data_to_send())

    async def serve():
        server = await asyncio.get_running_loop().create_server(Answerer, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(serve())


async def via_channel(fakes: str, n: int, inflight: int) -> None:
    config = {"project_id": demo.PROJECT_ID, "base_url": fakes, "max_concurrency": inflight}
    channel = fcm_push.FCMPush(config, channels.Context(public_url="http://127.0.0.1", name="push"))
    await channel.start()
    try:
        await pump(n, inflight, lambda i: channel.send(message(i)))
    finally:
        await channel.close()


async def via_send_each_async(fakes: str, n: int, inflight: int) -> None:
    import firebase_admin
    from firebase_admin import messaging

    app = firebase_admin.initialize_app(fcm_client.AnonymousCredential(), {"projectId": demo.PROJECT_ID},
                                        name=f"ceiling-{time.monotonic_ns()}")
    messaging._get_messaging_service(app)._fcm_url = url(fakes)
    for start in range(0, n, inflight):
        await messaging.send_each_async([fcm_client.build(message(i)) for i in range(start, min(n, start + inflight))],
                                        app=app)
    await asyncio.to_thread(firebase_admin.delete_app, app)


CLIENTS = {"raw-aiohttp": raw_aiohttp, "aiohttp": via_aiohttp,
           "httpx-h1": via_httpx_h1, "httpx-h2": via_httpx_h2,
           "channel": via_channel, "send_each_async": via_send_each_async}


async def count(fakes: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{fakes}/_fake/fcm/count") as resp:
        return (await resp.json())["count"]


async def reset(fakes: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{fakes}/_fake/reset") as resp:
        resp.raise_for_status()


async def measure(fakes: str, fakes_pid: int, name: str, n: int, inflight: int, h2c) -> None:
    await reset(fakes)
    server, pid = h2c if name == "httpx-h2" else (fakes, fakes_pid)  # h2c: the answerer's (url, pid)
    before = time.process_time(), cpu_seconds(pid), time.perf_counter()
    await CLIENTS[name](server, n, inflight)
    wall = time.perf_counter() - before[2]
    client, fake = time.process_time() - before[0], cpu_seconds(pid) - before[1]
    if server == fakes:
        got = await count(fakes)
        assert got == n, f"{name}: the fake recorded {got} of {n}"
    print(f"{name:16} {n / wall:8.0f}/s   CPU µs/message: client {client / n * 1e6:5.0f}"
          f"  server {fake / n * 1e6:5.0f} (its ceiling on a core of its own: {n / fake:.0f}/s)", flush=True)


async def main(args) -> None:
    names = args.only.split(",") if args.only else list(CLIENTS)
    port = demo.free_port()
    h2c = subprocess.Popen([sys.executable, __file__, "--serve-h2c", str(port)])
    with demo.fake_providers() as (fakes, proc):
        try:
            await demo.wait_ready(fakes, proc)
            await until_listening(port)
            for r in range(args.rounds):
                print(f"-- round {r + 1}")
                for name in names:
                    await measure(fakes, proc.pid, name, args.n, args.inflight, (f"http://127.0.0.1:{port}", h2c.pid))
        finally:
            h2c.terminate()
            h2c.wait(10)


async def until_listening(port: int) -> None:
    for _ in range(400):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)  # the h2c answerer starts in another process
    raise TimeoutError("the h2c answerer did not listen")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-h2c"]:
        sys.exit(h2c_serve(int(sys.argv[2])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(CLIENTS))
    asyncio.run(main(parser.parse_args()))
