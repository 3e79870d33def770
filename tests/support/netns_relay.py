"""Run a server in its own network namespace and reach one of its TCP ports from host loopback.

Milvus 2.3 binds its gRPC and HTTP servers to every interface and has no option to change that. Run
under `unshare -n`, it gets a namespace whose only interface is its own loopback: nothing outside can
reach any of its ports. One port is bridged out through a Unix socket in the shared filesystem:

    host 127.0.0.1:H --(outer relay)--> /tmp/.../rest.sock --(inner relay, in the namespace)--> 127.0.0.1:P

    python -m tests.support.netns_relay inner --unix SOCK --port P -- CMD ARGS...   # under unshare -n
    python -m tests.support.netns_relay outer --unix SOCK --port H                  # on the host

The inner side brings the namespace's loopback up (a new namespace starts with it down), starts CMD
and relays until CMD exits. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Awaitable, Callable

SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40

Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def loopback_up() -> None:
    """`ip link set lo up` without iproute2: one SIOCSIFFLAGS ioctl."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _handler(connect: Connect) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await connect()
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    return handle


async def _inner(sock: str, port: int, cmd: list[str]) -> int:
    loopback_up()
    server = await asyncio.start_unix_server(
        _handler(lambda: asyncio.open_connection("127.0.0.1", port)), path=sock)
    proc = subprocess.Popen(cmd)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, proc.kill)
    async with server:
        code = await loop.run_in_executor(None, proc.wait)
    return code


async def _outer(sock: str, port: int) -> None:
    server = await asyncio.start_server(_handler(lambda: asyncio.open_unix_connection(sock)), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("side", choices=["inner", "outer"])
    ap.add_argument("--unix", required=True, help="the Unix socket both relays share")
    ap.add_argument("--port", type=int, required=True, help="inner: the server's port; outer: the host port")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, cmd = ap.parse_args(argv[:split]), argv[split + 1:]  # inner: `-- CMD ARGS...`
    if args.side == "inner":
        if not cmd:
            ap.error("inner needs the server's command line after --")
        sys.exit(asyncio.run(_inner(args.unix, args.port, cmd)))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_outer(args.unix, args.port))


if __name__ == "__main__":
    main()
