#!/usr/bin/env python3
"""Ask a CRI runtime for its version over its unix socket: CRI v1 RuntimeService/Version.

usage: cri-version.py SOCKET     prints: RUNTIME_NAME RUNTIME_VERSION RUNTIME_API_VERSION
Python stdlib only (no crictl in Debian, no grpcio here): a minimal HTTP/2 client that sends
one unary gRPC call with an empty VersionRequest and decodes the VersionResponse strings
(version=1, runtime_name=2, runtime_version=3, runtime_api_version=4). Used by `up` to prove
the host reaches each node's CRI socket; exits 1 on any failure.
"""
import socket
import struct
import sys

PATH = b"/runtime.v1.RuntimeService/Version"
DATA, HEADERS, SETTINGS, GOAWAY, RST = 0, 1, 4, 7, 3


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):  # HPACK literal header field without indexing, new name, no Huffman
    out = b"\x00"
    for s in (name, value):
        assert len(s) < 127
        out += bytes([len(s)]) + s
    return out


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def fields(msg):  # protobuf: only length-delimited fields (all VersionResponse fields are strings)
    out, i = {}, 0
    while i < len(msg):
        key = msg[i]
        i += 1
        if key & 7 != 2:
            raise ValueError("unexpected wire type")
        n, shift = 0, 0
        while True:
            b = msg[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out[key >> 3] = msg[i:i + n].decode()
        i += n
    return out


def main():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sys.argv[1])
    headers = b"".join(literal(k, v) for k, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", PATH), (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0)
              + frame(HEADERS, 0x4, 1, headers)                  # END_HEADERS
              + frame(DATA, 0x1, 1, b"\x00\x00\x00\x00\x00"))    # END_STREAM; empty message
    body = b""
    while True:
        hdr = recv_exact(s, 9)
        length = struct.unpack(">I", b"\x00" + hdr[:3])[0]
        kind, flags = hdr[3], hdr[4]
        payload = recv_exact(s, length)
        if kind == SETTINGS and not flags & 1:
            s.sendall(frame(SETTINGS, 0x1, 0))
        elif kind == DATA:
            body += payload[payload[0] + 1:] if flags & 0x8 else payload   # strip padding
        elif kind in (GOAWAY, RST):
            raise RuntimeError("runtime closed the call")
        if kind in (DATA, HEADERS) and flags & 0x1:                   # END_STREAM
            break
    if len(body) < 5:
        raise RuntimeError("no response message (gRPC error)")
    f = fields(body[5:5 + struct.unpack(">I", body[1:5])[0]])
    print(f.get(2, "?"), f.get(3, "?"), f.get(4, "?"))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - a check: any failure is "not reachable"
        print("CRI Version via %s failed: %s" % (sys.argv[1] if len(sys.argv) > 1 else "?", e), file=sys.stderr)
        sys.exit(1)
