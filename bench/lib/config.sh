# Sourced by the benchmarks that start davit containers on a prepared
# rootfs (bench/start/prepare-rootfs.sh): the one container config they
# write, the rootfs shifted to 100000 with 65536 ids.
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
