#!/usr/bin/env python3
"""Minimal CRI v1 client over a unix socket, Python stdlib only (Debian ships no crictl).

usage: cri.py SOCKET version          prints: RUNTIME_NAME RUNTIME_VERSION RUNTIME_API_VERSION
       cri.py SOCKET pull IMAGE       pulls IMAGE through the runtime's CRI; prints the image ref

A hand-rolled HTTP/2 client for one unary gRPC call per connection: enough for `up` to prove the
host reaches each node's CRI socket and to pull the sandbox image the way the kubelet would.
Exits 1 (with the gRPC status when there is one) on failure.
"""
import socket
import struct
import sys

DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS, PADDED, ACK = 0x1, 0x4, 0x8, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):  # HPACK literal header field without indexing, new name, no Huffman
    out = b"\x00"
    for s in (name, value):
        assert len(s) < 127
        out += bytes([len(s)]) + s
    return out


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_bytes(field, data):  # a length-delimited protobuf field (string or message)
    return varint(field << 3 | 2) + varint(len(data)) + data


def pb_strings(msg):  # decode the length-delimited fields of a message: {field: bytes}
    out, i = {}, 0
    while i < len(msg):
        key, shift = 0, 0
        while True:
            b = msg[i]
            i += 1
            key |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if key & 7 == 0:  # varint: skip
            while msg[i] & 0x80:
                i += 1
            i += 1
            continue
        if key & 7 != 2:
            raise ValueError("unexpected wire type %d" % (key & 7))
        n, shift = 0, 0
        while True:
            b = msg[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out[key >> 3] = msg[i:i + n]
        i += n
    return out


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def call(sock, method, request, timeout=300):
    """One unary gRPC call; returns the response message bytes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock)
    headers = b"".join(literal(k, v) for k, v in [
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", method.encode()),
        (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0)
              + frame(HEADERS, END_HEADERS, 1, headers)
              + frame(DATA, END_STREAM, 1, b"\x00" + struct.pack(">I", len(request)) + request))
    body = b""
    while True:
        hdr = recv_exact(s, 9)
        kind, flags = hdr[3], hdr[4]
        payload = recv_exact(s, struct.unpack(">I", b"\x00" + hdr[:3])[0])
        if kind == SETTINGS and not flags & ACK:
            s.sendall(frame(SETTINGS, ACK, 0))
        elif kind == DATA:
            body += payload[payload[0] + 1:] if flags & PADDED else payload
        elif kind in (GOAWAY, RST_STREAM):
            raise RuntimeError("runtime closed the call")
        if kind in (DATA, HEADERS) and flags & END_STREAM:
            break
    s.close()
    if len(body) < 5:
        # no message means an error status; its text is Huffman-coded in the trailers, which
        # this client does not decode (see the runtime's log for the reason)
        raise RuntimeError("the call returned an error status (details in the runtime's log)")
    return body[5:5 + struct.unpack(">I", body[1:5])[0]]


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("version", "pull") or (sys.argv[2] == "pull") != (len(sys.argv) == 4):
        sys.exit(__doc__)
    sock = sys.argv[1]
    if sys.argv[2] == "version":
        f = pb_strings(call(sock, "/runtime.v1.RuntimeService/Version", b""))
        print(*(f.get(i, b"?").decode() for i in (2, 3, 4)))
    else:
        # PullImageRequest{image: ImageSpec{image: IMAGE}} -> PullImageResponse{image_ref}
        req = pb_bytes(1, pb_bytes(1, sys.argv[3].encode()))
        print(pb_strings(call(sock, "/runtime.v1.ImageService/PullImage", req)).get(1, b"?").decode())


if __name__ == "__main__":
    try:
        main()
    except (OSError, RuntimeError, ValueError, EOFError) as e:
        print("CRI %s via %s failed: %s" % (sys.argv[2], sys.argv[1], e), file=sys.stderr)
        sys.exit(1)
