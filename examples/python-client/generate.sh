#!/usr/bin/env sh
# Generate the Python stubs from the node's own protos into ./bayspace_pb.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../node/proto"
out="$here/gen"
mkdir -p "$out"
"${PYTHON:-python}" -m grpc_tools.protoc -I "$proto" --python_out="$out" --grpc_python_out="$out" \
  "$proto/bayspace/v1/node.proto"
touch "$out/bayspace/__init__.py" "$out/bayspace/v1/__init__.py"
