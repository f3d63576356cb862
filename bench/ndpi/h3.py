#!/usr/bin/env python3
"""Minimal HTTP/3 server and client on aioquic, for bench/ndpi/agreement.sh.

  h3.py server --host :: --port 443 --cert C --key K
  h3.py client --connect 10.77.0.2 --port 443 --sni www.youtube.com [--big-hello]

The server answers every request on every SNI with 200 and a short body.
The client makes one GET / with the given SNI (certificate not verified) and
prints "status=200 bytes=N initial_ch=..." on success, exits non-zero otherwise.
--big-hello sets aioquic's quantum_readiness_test, which adds a 1200-byte
transport parameter to the ClientHello, so the ClientHello has to be carried in
CRYPTO frames of two Initial packets (the SNI stays in the first one).
--sni-last moves the server_name extension to the end of the ClientHello (after
the transport parameters; browsers permute extension order), so with
--big-hello the SNI is only in the second Initial packet.
Run with the venv's python (aioquic installed there).
"""
import argparse
import asyncio
import dataclasses
import ssl
import sys

from aioquic.asyncio import QuicConnectionProtocol, connect, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent


class ServerProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = None

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        if self._h3 is None:
            return
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                body = b"guardwire ndpi bench h3 ok\n"
                self._h3.send_headers(
                    ev.stream_id,
                    [
                        (b":status", b"200"),
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                )
                self._h3.send_data(ev.stream_id, body, end_stream=True)
                self.transmit()


class ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic)
        self._waiter = None
        self.status = None
        self.body = b""

    async def get(self, authority: str) -> None:
        sid = self._quic.get_next_available_stream_id()
        self._h3.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", b"/"),
                (b"user-agent", b"aioquic-ndpi-bench"),
            ],
            end_stream=True,
        )
        self._waiter = asyncio.get_running_loop().create_future()
        self.transmit()
        await self._waiter

    def quic_event_received(self, event: QuicEvent) -> None:
        for ev in self._h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                for k, v in ev.headers:
                    if k == b":status":
                        self.status = int(v)
            elif isinstance(ev, DataReceived):
                self.body += ev.data
            if getattr(ev, "stream_ended", False) and self._waiter and not self._waiter.done():
                self._waiter.set_result(None)


async def run_server(a) -> None:
    cfg = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    cfg.load_cert_chain(a.cert, a.key)
    await serve(a.host, a.port, configuration=cfg, create_protocol=ServerProtocol)
    print(f"h3 server listening on [{a.host}]:{a.port}", flush=True)
    await asyncio.Future()


def move_sni_last() -> None:
    """Patch aioquic's ClientHello writer: server_name goes after all other extensions."""
    from aioquic import tls
    from aioquic.buffer import Buffer

    orig = tls.push_client_hello

    def push(buf, hello):
        if hello.server_name is not None:
            b = Buffer(capacity=1024)
            tls.push_server_name(b, hello.server_name)
            hello = dataclasses.replace(
                hello,
                server_name=None,
                other_extensions=list(hello.other_extensions) + [(tls.ExtensionType.SERVER_NAME, b.data)],
            )
        orig(buf, hello)

    tls.push_client_hello = push


async def run_client(a) -> int:
    if a.sni_last:
        move_sni_last()
    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name=a.sni,
        verify_mode=ssl.CERT_NONE,
        quantum_readiness_test=a.big_hello,
    )
    async with connect(
        a.connect, a.port, configuration=cfg, create_protocol=ClientProtocol, wait_connected=True
    ) as client:
        await asyncio.wait_for(client.get(a.sni), timeout=a.timeout)
        print(f"status={client.status} bytes={len(client.body)} sni={a.sni} big_hello={a.big_hello}")
        return 0 if client.status == 200 else 1


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--host", default="::")
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--cert", required=True)
    s.add_argument("--key", required=True)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--port", type=int, default=443)
    c.add_argument("--sni", required=True)
    c.add_argument("--big-hello", action="store_true")
    c.add_argument("--sni-last", action="store_true")
    c.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args()
    if a.cmd == "server":
        try:
            asyncio.run(run_server(a))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        return asyncio.run(asyncio.wait_for(run_client(a), timeout=a.timeout + 2))
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        print(f"h3 client failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
