# Sourced by .ci/run and scripts/demo.sh: puts a supported Node (22 or 24) first on PATH. When the
# machine's Node is older (or missing), installs Node 24 from the npm registry's `node` package into
# .tooling/node (once; later runs reuse it) and uses that. Exports CARACAL_NODE (the node binary).
_caracal_node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
_caracal_tooling="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tooling/node"
if [ "$(_caracal_node_major node)" -lt 22 ]; then
  if [ "$(_caracal_node_major "$_caracal_tooling/node_modules/node/bin/node")" -lt 22 ]; then
    echo "Node $(node --version 2>/dev/null || echo '(none)') is older than 22: installing Node 24 into .tooling/node" >&2
    mkdir -p "$_caracal_tooling"
    npm install --prefix "$_caracal_tooling" --no-save --no-audit --no-fund --loglevel=error node@24 >&2
  fi
  export PATH="$_caracal_tooling/node_modules/node/bin:$PATH"
  hash -r
fi
CARACAL_NODE="$(command -v node)"
export CARACAL_NODE
