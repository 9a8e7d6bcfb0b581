#!/usr/bin/env python3
"""Search a Bayspace node's federated catalog over gRPC.

    python search.py --node '[::1]:7410' --ca api.crt --token TOKEN [--region hk] [QUERY...]

Prints the matching datasets as a JSON array. The node, the certificate to
trust and the token may also come from BAYSPACE_NODE, BAYSPACE_CA and
BAYSPACE_TOKEN, as for the `bayspace` CLI. Without a certificate the
channel is plaintext, which a node accepts only on its loopback address
with `grpc-tls = false`.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from bayspace.v1 import node_pb2, node_pb2_grpc  # noqa: E402


def open_channel(node, ca):
    """A channel to `node` (host:port or an http(s):// URL): TLS trusting
    the PEM file `ca`, or plaintext without one."""
    target = node.removeprefix("https://").removeprefix("http://")
    if not ca:
        return grpc.insecure_channel(target)
    with open(ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(target, creds)


def search(node, token, text="", region="", publisher="", category="", level="", ca=None):
    """Yield every dataset that matches, following the page cursor."""
    metadata = [("authorization", f"Bearer {token}")]
    with open_channel(node, ca) as channel:
        stub = node_pb2_grpc.CatalogServiceStub(channel)
        after = ""
        while True:
            page = stub.Search(
                node_pb2.SearchRequest(
                    text=text, region=region, publisher=publisher,
                    category=category, level=level, limit=100, after=after,
                ),
                metadata=metadata,
                timeout=10,
            )
            yield from page.datasets
            if not page.next:
                return
            after = page.next


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("query", nargs="*", help="words that must all match")
    parser.add_argument("--node", default=os.environ.get("BAYSPACE_NODE", "[::1]:7410"))
    parser.add_argument("--token", default=os.environ.get("BAYSPACE_TOKEN"))
    parser.add_argument("--ca", default=os.environ.get("BAYSPACE_CA"),
                        help="the node's certificate (api.crt) or its CA, PEM")
    parser.add_argument("--region", default="")
    parser.add_argument("--publisher", default="")
    parser.add_argument("--category", default="")
    parser.add_argument("--level", default="")
    args = parser.parse_args()
    if not args.token:
        parser.error("a token is needed: --token or BAYSPACE_TOKEN")
    try:
        found = [
            {
                "id": d.id, "title": d.title, "publisher": d.publisher,
                "region": d.region, "version": d.version, "level": d.level,
            }
            for d in search(args.node, args.token, " ".join(args.query), args.region,
                            args.publisher, args.category, args.level, args.ca)
        ]
    except grpc.RpcError as e:
        print(f"search failed: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    json.dump(found, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
