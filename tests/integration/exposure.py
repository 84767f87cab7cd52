"""What a running server exposes, read from outside: its listening sockets, and a bare gRPC call.

``listening(pid)`` asks the kernel (psutil reads /proc/net/tcp and /proc/net/tcp6 and matches the socket
inodes with /proc/<pid>/fd) which TCP addresses the process and its children listen on.

``grpc_call(port, path)`` makes one unary gRPC call over cleartext HTTP/2 with nothing but a socket (grpcio is
not installed): enough to tell whether a call was answered, without a protobuf or HPACK decoder.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil


def process_tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def connections(process: psutil.Process, kind: str) -> list:
    """The process's sockets of ``kind``; none when it exited after it was listed (a server's short-lived helper
    processes come and go: the race is the kernel's, not a finding)."""
    try:
        return process.net_connections(kind=kind)
    except psutil.NoSuchProcess:
        return []


def listening(*pids: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by these processes or their children."""
    found = set()
    for pid in pids:
        for process in process_tree(pid):
            for conn in connections(process, "tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # Java reports 127.0.0.1 as ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_loopback


def exposed(*pids: int) -> set[tuple[str, int]]:
    """The listening sockets of these process trees that are reachable from another machine."""
    return {(address, port) for address, port in listening(*pids) if not is_loopback(address)}


# --- a unary gRPC call over HTTP/2 (RFC 9113), by hand --------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_string(text: str) -> bytes:
    raw = text.encode()
    if len(raw) < 127:  # a 7-bit length prefix, no Huffman coding
        return bytes([len(raw)]) + raw
    rest, out = len(raw) - 127, bytearray([127])
    while rest >= 128:
        out.append(rest % 128 + 128)
        rest //= 128
    return bytes(out) + bytes([rest]) + raw


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def grpc_call(port: int, path: str, token: str | None = None, message: bytes = b"", timeout: float = 15.0) -> bytes | None:
    """Call ``path`` ("/<package>.<Service>/<Method>") with a serialized request ``message`` (b"": an empty
    message, e.g. google.protobuf.Empty); returns the response message's bytes, or None when the call ended without
    one (a refused call: gRPC then sends only its status, in trailers)."""
    headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", f"127.0.0.1:{port}"),
               ("content-type", "application/grpc"), ("te", "trailers")]
    if token is not None:
        headers.append(("authorization", f"Bearer {token}"))
    block = b"".join(b"\x00" + _hpack_string(name) + _hpack_string(value) for name, value in headers)  # literal, new name
    body = b"\x00" + len(message).to_bytes(4, "big") + message  # uncompressed, length-prefixed
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(PREFACE + _frame(SETTINGS, 0, 0) + _frame(HEADERS, END_HEADERS, 1, block) + _frame(DATA, END_STREAM, 1, body))
        while True:
            head = _recv(sock, 9)
            length, kind, flags = int.from_bytes(head[:3], "big"), head[3], head[4]
            stream = int.from_bytes(head[5:], "big") & 0x7FFFFFFF
            payload = _recv(sock, length)
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(_frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                sock.sendall(_frame(PING, ACK, 0, payload))
            elif kind == DATA and stream == 1:
                received += payload
            elif kind in (RST_STREAM, GOAWAY):
                break
            if stream == 1 and kind in (DATA, HEADERS) and flags & END_STREAM:
                break
    return received[5:] if received else None
