#!/usr/bin/env python3
"""Builds the tar compatibility corpus (issue 17) into OUTDIR.

Every archive is made by a real tool (GNU tar in each of its formats,
bsdtar, Python's tarfile) or, for the odd cases those tools no longer
write, by hand from raw 512-byte headers. `corpus.rs` unpacks each one
with davit and with GNU tar and compares the trees and the listings.

Run as root (it chowns files to several owners).
"""

import io
import os
import subprocess
import sys
import tarfile

OUT = os.path.abspath(sys.argv[1])
WORK = os.path.join(OUT, ".work")
os.makedirs(WORK, exist_ok=True)
MTIME = "2020-01-02 03:04:05.123456789"


def sh(cmd, cwd=None):
    subprocess.run(["sh", "-euc", cmd], cwd=cwd or WORK, check=True)


# ---------------------------------------------------------------- source trees
# `full`: everything a rootfs has, names over 100 and over 255 bytes
# included. `short`: what v7 and ustar can hold (no long names, no fifo for
# v7).
sh(
    r"""
rm -rf full short
mkdir -p full && cd full
mkdir -p bin etc/acl.d usr/lib/deep tmp run home/u
printf 'su\n' > bin/su; chmod 4755 bin/su
printf 'sg\n' > bin/sg; chown 0:5 bin/sg; chmod 2755 bin/sg
printf 'conf\n' > etc/conf; chown 1000:1000 etc/conf; chmod 0640 etc/conf
printf 'x' > etc/xattr; setfattr -n user.davit -v corpus etc/xattr
setfattr -n user.bin -v 0x00ff0a etc/xattr
# Numeric ACL qualifiers (no name on the host): see `named` below.
printf 'acl\n' > etc/acl; setfacl -m u:4242:r,g:4343:rw etc/acl
setfacl -d -m u:4244:rx etc/acl.d
printf 'shared\n' > usr/lib/a; ln usr/lib/a usr/lib/b; ln usr/lib/a bin/c
ln -s ../usr/lib bin/lib; ln -s /etc/conf etc/abs
chmod 1777 tmp; chmod 0700 home/u; chown 1000:1000 home/u
printf 'home\n' > home/u/.profile; chown 1000:1000 home/u/.profile
mkfifo -m 0620 run/fifo
A=$(printf 'a%.0s' $(seq 1 120)); B=$(printf 'b%.0s' $(seq 1 150))
mkdir -p usr/lib/deep/$A; printf 'long\n' > usr/lib/deep/$A/$B
ln -s usr/lib/deep/$A/$B longlink
printf 'caf\303\251\n' > "usr/lib/caf$(printf '\303\251')"
printf 'big-id\n' > usr/lib/hi; chown 65534:65534 usr/lib/hi
: > empty
# A sparse file with 40 data regions: more than the 4 an old-GNU header
# holds, so that format needs extension blocks.
truncate -s 4M sparse
i=0; while [ $i -lt 40 ]; do printf "r$i" | dd of=sparse bs=1 seek=$((i * 100000 + 7)) conv=notrunc status=none; i=$((i + 1)); done
printf 'tail' | dd of=sparse bs=1 seek=$((4 * 1024 * 1024 - 4)) conv=notrunc status=none
truncate -s 2M allhole
find . -exec touch -h -d '"""
    + MTIME
    + r"""' {} +
cd .. && mkdir -p short && cd short
mkdir -p bin etc tmp
printf 'su\n' > bin/su; chmod 4755 bin/su
printf 'conf\n' > etc/conf; chown 1000:1000 etc/conf; chmod 0640 etc/conf
printf 'shared\n' > etc/a; ln etc/a bin/b
ln -s ../etc bin/etc; chmod 1777 tmp
find . -exec touch -h -d '"""
    + MTIME
    + """' {} +
"""
)

# Qualifiers with host names (5 is games, 7 is lp): GNU tar stores the
# names in SCHILY.acl.*, which davit does not resolve (docs/SECURITY.md);
# with --xattrs the raw system.posix_acl_* xattrs travel too, and win.
sh(
    r"""
rm -rf named && mkdir -p named/d && printf n > named/f
setfacl -m u:5:r,g:7:rw named/f; setfacl -d -m u:5:rx named/d
touch -d '"""
    + MTIME
    + """' named/f named/d named
"""
)
FULL = os.path.join(WORK, "full")
SHORT = os.path.join(WORK, "short")


def gnu(name, src, *args, files=("."),):
    out = os.path.join(OUT, name)
    sh(
        "tar --numeric-owner "
        + " ".join(args)
        + f" -cf '{out}' -C '{src}' "
        + " ".join(files)
    )


def bsd(name, src, *args):
    out = os.path.join(OUT, name)
    sh("bsdtar --numeric-owner " + " ".join(args) + f" -cf '{out}' -C '{src}' .")


# ------------------------------------------------------------------ GNU tar
gnu("gnu-v7.tar", SHORT, "--format=v7")
gnu("gnu-ustar.tar", SHORT, "--format=ustar")
gnu("gnu-oldgnu.tar", FULL, "--format=oldgnu")
gnu("gnu-gnu.tar", FULL, "--format=gnu")
gnu("gnu-posix.tar", FULL, "--format=posix", "--xattrs", "--xattrs-include='*'", "--acls")
gnu("gnu-posix-numeric-acl.tar", FULL, "--format=posix", "--acls")
gnu("gnu-posix-named-acl-xattrs.tar", os.path.join(WORK, "named"), "--format=posix", "--acls", "--xattrs", "--xattrs-include='*'")
gnu("gnu-sparse-oldgnu.tar", FULL, "--format=gnu", "-S")
gnu("gnu-sparse-0.0.tar", FULL, "--format=posix", "-S", "--sparse-version=0.0")
gnu("gnu-sparse-0.1.tar", FULL, "--format=posix", "-S", "--sparse-version=0.1")
gnu("gnu-sparse-1.0.tar", FULL, "--format=posix", "-S", "--sparse-version=1.0")
gnu(
    "gnu-pax-global.tar",
    SHORT,
    "--format=posix",
    "--pax-option=uid=77,gid=88,mtime=1234567890.5",
)
gnu("gnu-pax-local-opt.tar", SHORT, "--format=posix", "--pax-option=mtime:=1111111111.25")
# GNU incremental dumps hold `D` (dumpdir) members.
sh(f"rm -f {WORK}/snar; tar --numeric-owner --format=gnu -g {WORK}/snar -cf {OUT}/gnu-incremental.tar -C {SHORT} .")
gnu("gnu-transform-dotless.tar", SHORT, "--format=gnu", files=("bin", "etc", "tmp"))

# ------------------------------------------------------------------- bsdtar
bsd("bsd-pax.tar", FULL, "--format", "pax", "--xattrs")
bsd("bsd-pax-acl.tar", FULL, "--format", "pax", "--acls", "--xattrs")
bsd("bsd-ustar.tar", SHORT, "--format", "ustar")
bsd("bsd-gnutar.tar", FULL, "--format", "gnutar")
bsd("bsd-v7.tar", SHORT, "--format", "v7")
bsd("bsd-restricted-pax.tar", FULL, "--format", "paxr")

# ----------------------------------------------------------- Python tarfile
for fmt, tag in ((tarfile.GNU_FORMAT, "gnu"), (tarfile.PAX_FORMAT, "pax"), (tarfile.USTAR_FORMAT, "ustar")):
    src = SHORT if tag == "ustar" else FULL
    with tarfile.open(os.path.join(OUT, f"py-{tag}.tar"), "w", format=fmt) as t:
        t.add(src, arcname=".")
with tarfile.open(
    os.path.join(OUT, "py-pax-global.tar"),
    "w",
    format=tarfile.PAX_FORMAT,
    pax_headers={"uid": "4242", "gid": "4343", "mtime": "1500000000.75"},
) as t:
    t.add(SHORT, arcname=".")
with tarfile.open(os.path.join(OUT, "py-pax-unicode.tar"), "w", format=tarfile.PAX_FORMAT) as t:
    for n in ("ünïcødé", "日本語/ファイル", "emoji-\U0001F600"):
        ti = tarfile.TarInfo(n)
        if "/" in n:
            d = tarfile.TarInfo(n.split("/")[0])
            d.type = tarfile.DIRTYPE
            d.mode = 0o755
            t.addfile(d)
        ti.size = 3
        ti.mtime = 1600000000
        t.addfile(ti, io.BytesIO(b"abc"))


# ---------------------------------------------------------------- by hand
def octal(v, width):
    if v >= 8 ** (width - 1):
        # GNU base-256, as GNU tar writes a size or id too big for octal.
        return b"\x80" + v.to_bytes(width - 1, "big")
    return (b"%0*o" % (width - 1, v)) + b"\0"


def header(name, typ=b"0", size=0, mode=0o644, uid=0, gid=0, mtime=1700000000,
           link=b"", magic=b"ustar\x0000", fields=None, signed=False):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(uid, 8)
    h[116:124] = octal(gid, 8)
    h[124:136] = octal(size, 12)
    h[136:148] = octal(mtime, 12)
    h[156:157] = typ
    h[157:157 + len(link)] = link
    h[257:265] = magic
    for off, val in (fields or {}).items():
        h[off:off + len(val)] = val
    h[148:156] = b" " * 8
    if signed:
        s = sum(b - 256 if b > 127 else b for b in h)
    else:
        s = sum(h)
    h[148:156] = b"%06o\0 " % (s & 0o777777)
    return bytes(h)


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def member(h, data=b""):
    return h + pad(data)


def pax(records, typ=b"x", name=b"PaxHeaders/x"):
    body = b""
    for k, v in records:
        rec = b" " + k + b"=" + v + b"\n"
        n = len(rec) + 1
        while len(str(n)) + len(rec) != n:
            n += 1
        body += str(n).encode() + rec
    return member(header(name, typ, len(body)), body)


def longname(name, typ=b"L"):
    return member(header(b"././@LongLink", typ, len(name), magic=b"ustar  \0"), name)


def write(name, *parts):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"".join(parts) + b"\0" * 1024)


GNU = b"ustar  \0"
write(
    "hand-nul-ids.tar",
    member(header(b"d/", b"5", mode=0o755, fields={108: b"\0" * 8, 116: b"\0" * 8})),
    member(header(b"d/f", b"0", 5, fields={108: b"\0" * 8, 116: b"\0" * 8}), b"hello"),
)
write(
    "hand-signed-checksum.tar",
    member(header("é-signé".encode(), b"0", 3, signed=True), b"abc"),
    member(header(b"plain", b"0", 2, signed=True), b"ok"),
)
write(
    "hand-v7-dirs.tar",
    member(header(b"top/", b"\0", mode=0o755, magic=b"\0" * 8)),
    member(header(b"top/sub/", b"\0", mode=0o750, magic=b"\0" * 8)),
    member(header(b"top/sub/file", b"\0", 4, magic=b"\0" * 8), b"v7v7"),
)
write(
    "hand-regular-with-slash.tar",
    member(header(b"dir/", b"0", mode=0o755)),
    member(header(b"dir/f", b"0", 1), b"1"),
)
write(
    "hand-solaris-x.tar",
    pax([(b"path", b"solaris/renamed-by-X"), (b"mtime", b"1300000000.5")], typ=b"X"),
    member(header(b"solaris/short", b"0", 2), b"hi"),
)
write(
    "hand-pax-global.tar",
    pax([(b"uid", b"123"), (b"gid", b"456"), (b"mtime", b"1400000000")], typ=b"g", name=b"GlobalHead.0"),
    member(header(b"g1", b"0", 2), b"g1"),
    pax([(b"uid", b"7")]),
    member(header(b"g2", b"0", 2), b"g2"),
    pax([(b"gid", b"9")], typ=b"g", name=b"GlobalHead.1"),
    member(header(b"g3", b"5", mode=0o755)),
)
write(
    "hand-dumpdir.tar",
    member(header(b"dd/", b"D", 8, mode=0o711, uid=12, gid=34, mtime=1234567, magic=GNU), b"Yf\0Nz\0\0\0"),
    member(header(b"dd/f", b"0", 3, uid=12, gid=34, magic=GNU), b"abc"),
)
write(
    "hand-two-longnames.tar",
    longname(b"first/long/name\0"),
    longname(b"second/" + b"n" * 120 + b"\0"),
    member(header(b"trunc", b"0", 4, magic=GNU), b"last"),
)
write(
    "hand-two-longlinks.tar",
    member(header(b"target1", b"0", 1, magic=GNU), b"1"),
    member(header(b"target2", b"0", 1, magic=GNU), b"2"),
    longname(b"target1\0", typ=b"K"),
    longname(b"target2\0", typ=b"K"),
    member(header(b"ln", b"2", magic=GNU)),
)
write(
    "hand-two-pax.tar",
    pax([(b"path", b"pax-first"), (b"uid", b"5")]),
    pax([(b"path", b"pax-second")]),
    member(header(b"ustar-name", b"0", 3), b"two"),
)
write(
    "hand-longname-nul.tar",
    longname(b"cut-here\0hidden-tail\0"),
    member(header(b"ignored", b"0", 3, magic=GNU), b"nul"),
)
write(
    "hand-pax-path-nul.tar",
    pax([(b"path", b"kept\0dropped")]),
    member(header(b"f", b"0", 2), b"hi"),
)
write(
    "hand-dir-size.tar",
    # The payload header sits where davit used to skip to: GNU tar reads
    # it as data of nothing and lists `d/payload` as a member.
    member(header(b"d/", b"5", 512, mode=0o755)),
    member(header(b"d/payload", b"0", 4, mode=0o4755), b"evil"),
)
write(
    "hand-hardlink-size.tar",
    member(header(b"orig", b"0", 4), b"data"),
    member(header(b"hl", b"1", 512, link=b"orig")),
    member(header(b"after", b"0", 2), b"ok"),
)
write(
    "hand-contiguous-and-unknown.tar",
    member(header(b"contig", b"7", 5), b"seven"),
    member(header(b"unknown", b"Q", 5), b"qqqqq"),
)
write(
    "hand-base256.tar",
    member(
        header(
            b"big-uid",
            b"0",
            2,
            fields={108: b"\x80" + b"\0" * 5 + b"\x10\x00", 116: b"\x80" + b"\0" * 5 + b"\x20\x01"},
        ),
        b"hi",
    ),
)
write(
    "hand-prefix.tar",
    member(header(b"file-in-prefix", b"0", 3, fields={345: b"some/prefix/dir"}), b"pfx"),
)
write(
    "hand-space-terminated.tar",
    member(header(b"sp", b"0", 2, fields={100: b"   644 \0", 108: b"     0 \0", 124: b"          2 "}), b"sp"),
)
write(
    # GNU tar names every member `every-member-is-this` (the last wins),
    # but for one with a path of its own.
    "hand-global-path.tar",
    pax([(b"path", b"every-member-is-this")], typ=b"g", name=b"GlobalHead.0"),
    member(header(b"a", b"0", 1), b"a"),
    member(header(b"b", b"0", 1), b"b"),
    pax([(b"path", b"own")]),
    member(header(b"c", b"0", 1), b"c"),
)
write(
    # star: a 131-byte prefix, then atime and ctime, and a `tar\0` trailer.
    "hand-star.tar",
    member(
        header(
            b"file",
            b"0",
            4,
            fields={345: b"star/prefix", 476: b"14000000000 ", 488: b"14000000000 ", 508: b"tar\0"},
        ),
        b"star",
    ),
)
write(
    # A full 131-byte star prefix: GNU tar and bsdtar read the times as
    # part of the name (they look at the prefix's 131st byte, not at the
    # trailer), and so must davit.
    "hand-star-full-prefix.tar",
    member(
        header(
            b"file",
            b"0",
            4,
            fields={345: b"p" * 131, 476: b"14000000000 ", 488: b"14000000000 ", 508: b"tar\0"},
        ),
        b"star",
    ),
)
# Deliberate refusals (see EXPECT in corpus.rs).
write(
    "refuse-global-sparse.tar",
    pax([(b"GNU.sparse.map", b"0,1")], typ=b"g", name=b"GlobalHead.0"),
    member(header(b"a", b"0", 1), b"a"),
)


def old_gnu_sparse(name, real, regions, data):
    """An old-GNU sparse member: up to 4 regions in the header."""
    f = {482: b"\0", 483: octal(real, 12)}
    for i, (off, n) in enumerate(regions[:4]):
        f[386 + i * 24] = octal(off, 12)
        f[398 + i * 24] = octal(n, 12)
    return member(header(name, b"S", len(data), magic=GNU, fields=f), data)


# A 1 TiB file with 5 bytes of data (issue 17: 11 minutes before, as if
# the holes were written): over the default cap of 64 GiB.
write("refuse-sparse-1tib.tar", old_gnu_sparse(b"huge", 1 << 40, [(1 << 39, 5)], b"hello"))
sh(f"rm -rf {WORK}")
