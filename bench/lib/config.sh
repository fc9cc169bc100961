# Sourced by the benchmarks that start davit containers on a prepared
# rootfs (bench/start/prepare-rootfs.sh): the one container config they
# write, the rootfs shifted to 100000 with 65536 ids; and the crun bundle
# of the start pairs.
#
#   bench_config NAME ROOTFS >FILE
# shellcheck shell=bash
bench_config() {
  cat <<TOML
name = "$1"
rootfs = "$2"
[[idmap.uid]]
container = 0
host = 100000
len = 65536
[[idmap.gid]]
container = 0
host = 100000
len = 65536
TOML
}

# A crun bundle in BUNDLE for ROOTFS: crun's default spec running
# /bin/true, no terminal, a user namespace with the map 0 -> HOST (65536).
#
#   bench_crun_bundle BUNDLE ROOTFS HOST
bench_crun_bundle() {
  mkdir -p "$1"
  (cd "$1" && crun spec)
  python3 - "$1/config.json" "$2" "$3" <<'PY'
import json, sys
p, rootfs, host = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = json.load(open(p))
c["root"] = {"path": rootfs, "readonly": False}
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
ns = c["linux"]["namespaces"]
if not any(n["type"] == "user" for n in ns):
    ns.append({"type": "user"})
m = [{"containerID": 0, "hostID": host, "size": 65536}]
c["linux"]["uidMappings"] = m
c["linux"]["gidMappings"] = m
json.dump(c, open(p, "w"), indent=1)
PY
}
