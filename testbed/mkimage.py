#!/usr/bin/env python3
"""Build a one-layer OCI image as an oci-archive (a tar of an OCI image layout).

usage: mkimage.py SOURCE OUT.tar [--ref TAG] [--name IMAGE] [--cmd ARG ...]  (--cmd last)

SOURCE is a busybox binary: the layer holds /bin/busybox, applet symlinks, /etc/passwd,
/etc/group and /tmp (1777). Or SOURCE is a directory: the layer is its tree, with owners,
modes, symbolic and hard links as they are (files/debian-root.sh makes such roots).
Output is byte-for-byte reproducible (fixed mtimes, gzip without timestamp), so pushing the
same busybox again gives the same digests: the registry, containerd and checkpoints stay in
agreement across testbed restarts. Prints the manifest digest. Python 3 stdlib only.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import tarfile

APPLETS = [
    "sh", "sleep", "cat", "echo", "ls", "ps", "date", "env", "tail", "true", "false", "wc",
    "head", "grep", "mkdir", "dd", "rm", "cp", "mv", "touch", "pwd", "printf", "seq", "test",
    "[", "kill", "id", "uname", "hostname", "sed", "ln", "chmod", "stat", "du", "df", "mount",
    "sort", "uniq", "tr", "cut", "tee", "xargs", "find", "awk", "md5sum", "sha256sum", "yes",
    "nc", "wget", "ping", "ip", "ifconfig", "nslookup", "netstat",
]
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
EPOCH = "1970-01-01T00:00:00Z"


def entry(name, kind=tarfile.REGTYPE, mode=0o644, size=0, link="", uid=0, gid=0):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, link
    ti.mtime, ti.uid, ti.gid = 0, uid, gid
    ti.uname, ti.gname = ("root" if uid == 0 else ""), ("root" if gid == 0 else "")
    return ti


def layer_tar(busybox):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["bin", "dev", "etc", "proc", "root", "run", "sys", "tmp", "var"]:
            t.addfile(entry(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        data = open(busybox, "rb").read()
        t.addfile(entry("bin/busybox", mode=0o755, size=len(data)), io.BytesIO(data))
        for a in sorted(APPLETS):
            t.addfile(entry("bin/" + a, tarfile.SYMTYPE, 0o777, link="busybox"))
        for name, text in [
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        ]:
            b = text.encode()
            t.addfile(entry(name, size=len(b)), io.BytesIO(b))
    return buf.getvalue()


def tree_tar(root):
    buf = io.BytesIO()
    first_of = {}  # (device, inode) -> the path a hard-linked file was first added under

    def add(t, rel):
        for name in sorted(os.listdir(os.path.join(root, rel) if rel else root)):
            path = rel + "/" + name if rel else name
            full = os.path.join(root, path)
            st = os.lstat(full)
            meta = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISDIR(st.st_mode):
                t.addfile(entry(path, tarfile.DIRTYPE, **meta))
                add(t, path)
            elif stat.S_ISLNK(st.st_mode):
                t.addfile(entry(path, tarfile.SYMTYPE, link=os.readlink(full), **meta))
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in first_of:
                    t.addfile(entry(path, tarfile.LNKTYPE, link=first_of[key], **meta))
                    continue
                first_of[key] = path
                with open(full, "rb") as f:
                    t.addfile(entry(path, size=st.st_size, **meta), f)
            else:
                raise SystemExit("%s: not a file, directory or link" % full)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        add(t, "")
    return buf.getvalue()


def gzipped(data):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as g:
        g.write(data)
    return buf.getvalue()


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a busybox binary, or a directory whose tree is the layer")
    ap.add_argument("out")
    ap.add_argument("--ref", default="latest", help="tag recorded in index.json")
    ap.add_argument("--name", default="docker.io/library/busybox", help="image name for ctr import")
    # The rest of the line, so that Cmd may hold options of its own (--protected-mode).
    ap.add_argument("--cmd", nargs=argparse.REMAINDER, default=["sh"], help="config Cmd (last)")
    a = ap.parse_args()

    raw = tree_tar(a.source) if os.path.isdir(a.source) else layer_tar(a.source)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    ldig, layer = blob(gzipped(raw))
    cdig, config = blob(json.dumps({
        "created": EPOCH, "architecture": ARCH, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": a.cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": EPOCH, "created_by": "testbed/mkimage.py"}],
    }, sort_keys=True, separators=(",", ":")).encode())
    mdig, manifest = blob(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldig, "size": len(layer)}],
    }, sort_keys=True, separators=(",", ":")).encode())
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig, "size": len(manifest),
            "platform": {"architecture": ARCH, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": a.ref,
                            "io.containerd.image.name": "%s:%s" % (a.name, a.ref)},
        }],
    }, sort_keys=True, separators=(",", ":")).encode()

    with tarfile.open(a.out, "w", format=tarfile.PAX_FORMAT) as t:
        for d in ["blobs", "blobs/sha256"]:
            t.addfile(entry(d, tarfile.DIRTYPE, 0o755))
        files = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        files += [("blobs/sha256/" + d.split(":")[1], b) for d, b in [(ldig, layer), (cdig, config), (mdig, manifest)]]
        for name, b in files:
            t.addfile(entry(name, size=len(b)), io.BytesIO(b))
    print(mdig)


if __name__ == "__main__":
    main()
