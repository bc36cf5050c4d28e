#!/usr/bin/env bash
# tools/temper-launch against what torchrun gives each rank (docs/distributed.md): the rank
# variables, one master port, ranks numbered across nodes, OMP_NUM_THREADS shared out unless set,
# a failing rank ending the others with its status, and refused arguments.
set -uo pipefail
launch=${1:?usage: temper_launch_test.sh path/to/temper-launch}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAILED: $*" >&2; failures=$((failures + 1)); }
expect_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }

# Each rank writes its view of the environment to its own file.
cat > "$work/rank.sh" <<'RANK'
#!/usr/bin/env bash
echo "$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT $OMP_NUM_THREADS" > "$1/rank$RANK"
RANK
chmod +x "$work/rank.sh"

env -u OMP_NUM_THREADS "$launch" --nproc 2 -- "$work/rank.sh" "$work" 2> "$work/stderr"
expect_eq "$?" 0 "two ranks succeed"
cores=$(getconf _NPROCESSORS_ONLN); share=$((cores / 2)); [ "$share" -ge 1 ] || share=1
read -r r w l lw addr port0 omp < "$work/rank0"
expect_eq "$r $w $l $lw $addr $omp" "0 2 0 2 127.0.0.1 $share" "rank 0's environment"
read -r r w l lw addr port1 omp < "$work/rank1"
expect_eq "$r $w $l $lw $addr $omp" "1 2 1 2 127.0.0.1 $share" "rank 1's environment"
expect_eq "$port1" "$port0" "one master port for every rank"
grep -q "OMP_NUM_THREADS=$share per rank" "$work/stderr" || fail "the thread share is not reported"

rm -f "$work"/rank*[0-9]
OMP_NUM_THREADS=3 "$launch" --nproc 2 --nnodes 2 --node-rank 1 --master-port 29533 -- "$work/rank.sh" "$work" 2> /dev/null
expect_eq "$?" 0 "second node's ranks succeed"
read -r r w l lw addr port omp < "$work/rank3"
expect_eq "$r $w $l $lw $port $omp" "3 4 1 2 29533 3" "node 1's second rank (OMP_NUM_THREADS set by the user is kept)"
[ ! -e "$work/rank0" ] || fail "node 1 started rank 0"

# Rank 1 fails at once; rank 0 would run for a minute: the launcher ends it and returns 3.
cat > "$work/fails.sh" <<'FAILS'
#!/usr/bin/env bash
if [ "$RANK" = 1 ]; then exit 3; fi
exec sleep 60  # the rank itself, so stopping it leaves nothing holding the output open
FAILS
chmod +x "$work/fails.sh"
start=$(date +%s)
"$launch" --nproc 2 --grace 1 -- "$work/fails.sh" 2> "$work/stderr"
expect_eq "$?" 3 "the failing rank's status"
[ $(( $(date +%s) - start )) -lt 30 ] || fail "the surviving rank was not stopped"
grep -q "rank 1 exited with status 3" "$work/stderr" || fail "the failing rank is not named"

for bad in "--nproc 0 -- true" "--nproc 2" "--nproc 2 --nnodes 2 --node-rank 2 -- true" \
           "--nproc 2 --nnodes 2 -- true" "--nproc 2 --master-port 70000 -- true" "--bogus -- true"; do
  # shellcheck disable=SC2086
  "$launch" $bad > /dev/null 2>&1
  expect_eq "$?" 2 "refused arguments '$bad'"
done

[ "$failures" -eq 0 ] && echo "temper-launch: all checks passed"
exit $(( failures > 0 ))
