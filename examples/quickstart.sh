#!/usr/bin/env bash
# Quick start: sign and publish the hello example, start a 3-node mesh in the background,
# deploy hello on 3 instances and call it through the edge.
#   ./examples/quickstart.sh            (home: $MYCELIUM_HOME, default ./.mycelium)
#   EDGE_PORT=9090 ./examples/quickstart.sh
# The mesh keeps running afterwards; stop it with `mycelium down`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export MYCELIUM_HOME="${MYCELIUM_HOME:-$PWD/.mycelium}"
edge_port="${EDGE_PORT:-8080}"
log="$MYCELIUM_HOME/quickstart-mesh.log"

# 1. A signing key (its public key joins this home's trusted signers).
if [ ! -f "$MYCELIUM_HOME/keys/default.key" ]; then
    echo "== keygen"
    mycelium keygen
fi

# 2. Flow A: pack, sign, verify and store the hello spore; the digest names it.
echo "== publish examples/hello"
digest="$(mycelium publish "$here/hello/hello" --manifest "$here/hello/manifest.json")"
echo "digest $digest"
mycelium verify "$digest"

# 3. The mesh, in the background; wait for its "mesh up" line.
echo "== mycelium up --nodes 3 --edge-port $edge_port  (log: $log)"
mkdir -p "$MYCELIUM_HOME"
mycelium up --nodes 3 --edge-port "$edge_port" >"$log" 2>&1 &
mesh_pid=$!
for _ in $(seq 1 300); do
    grep -q "mesh up" "$log" 2>/dev/null && break
    if ! kill -0 "$mesh_pid" 2>/dev/null; then
        echo "mycelium up exited early:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.1
done
grep -q "mesh up" "$log" || { echo "mesh did not come up in 30 s; see $log" >&2; exit 1; }
grep "mesh up" "$log"

# 4. Flow B: deploy hello on 3 nodes and wait until all 3 are Ready.
echo "== deploy hello"
mycelium deploy hello "$digest" --min 3 --max 3

# 5. Flow C: through the edge, round-robin over the instances.
echo "== curl http://127.0.0.1:$edge_port/hello/"
for _ in 1 2 3; do
    curl -fsS "http://127.0.0.1:$edge_port/hello/"
done
mycelium status

echo "== the mesh is running (pid $mesh_pid). Try: mycelium tree; mycelium kill hello;"
echo "   mycelium logs --follow; and stop it with: mycelium down"
echo "   Every command, option and setting: docs/reference.md (or mycelium COMMAND --help)."
