# Sourced by the inner shell of the benchmarks that make containers from a
# served image (bench/cold, bench/create), inside their private mount
# namespace: root's subordinate range 0 -> 1000000 from WORK/subid bound
# over /etc/subuid and /etc/subgid (LXC wants it there), and every davit
# directory under WORK, davit's cgroups under CGROUP_PREFIX, no proxy.
#
#   bench_env WORK
# shellcheck shell=bash
bench_env() {
  local work=$1
  mount --bind "$work/subid" /etc/subuid
  mount --bind "$work/subid" /etc/subgid
  export DAVIT_CONTAINERS_DIR=$work/davit/containers DAVIT_RUNTIME_DIR=$work/davit/run
  export DAVIT_BASES_DIR=$work/davit/bases DAVIT_SUBUID=$work/subid DAVIT_SUBGID=$work/subid
  export DAVIT_CGROUP_PREFIX=$CGROUP_PREFIX NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
  unset DAVIT_SERVER DAVIT_CACHE_DIR http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
  export GNUPGHOME=$work/gnupg
}
