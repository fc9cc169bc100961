# Sourced by every benchmark that bench/all.sh runs: one row of the
# summary table of issue 19's goals, appended to $BENCH_SUMMARY when it is
# set (all.sh sets it and prints the table at the end); nothing otherwise.
#
#   summary_row WORK ANCHOR DAVIT RATIO GOAL
#
# GOAL is "<= X" or ">= X" (or "-" for a row with no goal); the last column
# says whether RATIO meets it.
# shellcheck shell=bash
summary_row() {
  [ -n "${BENCH_SUMMARY:-}" ] || return 0
  local work=$1 anchor=$2 davit=$3 ratio=$4 goal=$5 holds=-
  case "$goal" in
    "<= "*) holds=$(awk -v r="$ratio" -v g="${goal#<= }" 'BEGIN {print (r <= g) ? "yes" : "no"}') ;;
    ">= "*) holds=$(awk -v r="$ratio" -v g="${goal#>= }" 'BEGIN {print (r >= g) ? "yes" : "no"}') ;;
  esac
  echo "| $work | $anchor | $davit | $ratio | $goal | $holds |" >>"$BENCH_SUMMARY"
}
