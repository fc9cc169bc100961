# Build a cached fixture once, safely, whoever asks for it at the same time.
# Sourced by images/debian/build.sh and ci/vm/fetch.sh; tested by
# crates/testkit/tests/cache.rs.
#
#   . scripts/lib/cache.sh
#   cache_build FINAL BUILDER [ARGS...]
#
# FINAL is the artefact: a file or a directory. It only ever appears by a
# rename of a complete, synced build, so when it exists it is finished and
# is used as it is. Otherwise, under an exclusive flock on DIR/.NAME.lock
# (beside FINAL), the caller that got the lock first runs BUILDER ARGS...
# with CACHE_TMP set to a unique path beside FINAL that does not exist yet;
# BUILDER must create the artefact there (a file or a directory) and exit 0.
# It may keep scratch files at "$CACHE_TMP".SUFFIX: they are removed with
# CACHE_TMP, whatever the outcome.
# The result is synced and renamed to FINAL. Callers that waited on the lock
# then find FINAL and build nothing.
#
# A BUILDER that fails, or a build killed at any point, leaves at most its
# temporary DIR/.NAME.tmp.XXXXXX, which is never taken for FINAL and is
# removed by the next build of FINAL (under the lock, so never while another
# build is using it). BUILDER runs without the lock's descriptor, so a daemon
# it leaves behind (a gpg-agent, say) cannot hold the lock.
#
# Exit status: 0 when FINAL exists; BUILDER's status when it failed; 1 when
# it exited 0 without making CACHE_TMP.

cache_build() {
    local final=$1
    shift
    [ -e "$final" ] && return 0
    local dir base lock fd rc=0
    dir=$(dirname -- "$final")
    base=$(basename -- "$final")
    lock="$dir/.$base.lock"
    mkdir -p -- "$dir"
    exec {fd}>"$lock"
    flock "$fd"
    if [ -e "$final" ]; then
        exec {fd}>&-
        return 0
    fi
    # Leftovers of builds that died: nobody else builds FINAL while we hold
    # the lock.
    rm -rf --one-file-system -- "$dir/.$base.tmp."*
    local tmp
    tmp=$(mktemp -u -- "$dir/.$base.tmp.XXXXXX")
    # In the background, so that errexit holds inside a BUILDER function
    # (bash ignores it in a function called from an `||` list).
    (
        set -e
        export CACHE_TMP=$tmp
        "$@"
    ) {fd}>&- &
    wait "$!" || rc=$?
    if [ "$rc" = 0 ] && [ ! -e "$tmp" ]; then
        echo "cache_build: $* exited 0 but made nothing at $tmp (for $final)" >&2
        rc=1
    fi
    rm -rf --one-file-system -- "$tmp".*
    if [ "$rc" = 0 ]; then
        if [ -d "$tmp" ]; then sync -f -- "$tmp"; else sync -- "$tmp"; fi
        mv -T -- "$tmp" "$final"
        sync -- "$dir"
    else
        rm -rf --one-file-system -- "$tmp"
    fi
    exec {fd}>&-
    return "$rc"
}
