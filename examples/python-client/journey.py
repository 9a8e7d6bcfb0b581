#!/usr/bin/env python3
"""A researcher's whole journey with a Bayspace node, over TLS.

    python journey.py --node '[2001:db8::5]:7410' --ca api.crt --token TOKEN \\
        --query 'air quality' --purpose academic-research --out data.csv

1. searches the federated catalog (the first match is taken, or --dataset);
2. requests a contract for it (ContractService.Request);
3. follows the negotiation (ContractService.Watch) until FINALIZED or
   TERMINATED;
4. has the home node fetch the data, kept sealed (TransferService.Fetch);
5. downloads it to --out on this machine (DataService.Download): the bytes
   go to OUT.part, a re-run resumes from there, and OUT appears only once
   the BLAKE3 matches.

With --agreement AGREEMENT_ID, steps 1 to 3 are skipped. Prints a JSON
summary. The node, certificate and token may also come from BAYSPACE_NODE,
BAYSPACE_CA and BAYSPACE_TOKEN.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import blake3  # noqa: E402
import grpc  # noqa: E402
from bayspace.v1 import node_pb2, node_pb2_grpc  # noqa: E402

from search import open_channel, search  # noqa: E402

# A Watch that sees no change for this long gives up (seconds).
WATCH_TIMEOUT = 600


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def request_and_follow(channel, metadata, dataset_id, purpose, offer_id):
    """Requests the dataset; returns the negotiation once it has ended."""
    contracts = node_pb2_grpc.ContractServiceStub(channel)
    n = contracts.Request(
        node_pb2.ContractRequest(dataset_id=dataset_id, purpose=purpose, offer_id=offer_id),
        metadata=metadata, timeout=30,
    )
    log(f"requested {dataset_id}: negotiation {n.id} is {n.state}")
    for n in contracts.Watch(node_pb2.ShowNegotiationRequest(id=n.id),
                             metadata=metadata, timeout=WATCH_TIMEOUT):
        log(f"  {n.state}")
        if n.state in ("FINALIZED", "TERMINATED"):
            return n
    raise RuntimeError("the node ended the Watch before the negotiation ended")


def fetch_sealed(channel, metadata, agreement_id):
    """Has the home node fetch the data, kept sealed, unless it holds it."""
    data = node_pb2_grpc.DataServiceStub(channel)
    held = data.List(node_pb2.DataListRequest(), metadata=metadata, timeout=30).items
    if any(d.agreement_id == agreement_id and d.state in ("sealed", "shredded") for d in held):
        return
    transfers = node_pb2_grpc.TransferServiceStub(channel)
    for p in transfers.Fetch(node_pb2.FetchRequest(agreement_id=agreement_id, keep_sealed=True),
                             metadata=metadata):
        if p.done:
            log(f"the home node holds {p.bytes_done} bytes, sealed")
            return
        log(f"  {p.bytes_done} / {p.bytes_total} bytes")


def download(channel, metadata, agreement_id, out):
    """Downloads into out.part from where it stopped; checks the BLAKE3 and
    renames. Returns (bytes, resumed_bytes, blake3 hex)."""
    part = out + ".part"
    hasher = blake3.blake3()
    resumed = 0
    if os.path.exists(part):
        with open(part, "rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
                resumed += len(chunk)
    data = node_pb2_grpc.DataServiceStub(channel)
    written = resumed
    with open(part, "ab") as f:
        for msg in data.Download(node_pb2.DownloadRequest(agreement_id=agreement_id, offset=resumed),
                                 metadata=metadata):
            if msg.done:
                f.flush()
                os.fsync(f.fileno())
                actual = hasher.hexdigest()
                if written != msg.size or actual != msg.blake3:
                    os.remove(part)
                    raise RuntimeError(
                        f"the download does not verify ({written} of {msg.size} bytes, "
                        f"BLAKE3 {actual}, expected {msg.blake3}); {part} was removed")
                os.replace(part, out)
                return written, resumed, actual
            f.write(msg.data)
            hasher.update(msg.data)
            written += len(msg.data)
    raise RuntimeError(f"the node ended the download early; run again to resume from {part}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", default=os.environ.get("BAYSPACE_NODE", "[::1]:7410"))
    parser.add_argument("--ca", default=os.environ.get("BAYSPACE_CA"),
                        help="the node's certificate (api.crt) or its CA, PEM")
    parser.add_argument("--token", default=os.environ.get("BAYSPACE_TOKEN"))
    parser.add_argument("--query", default="", help="catalog search words")
    parser.add_argument("--dataset", help="the dataset id, instead of the first match")
    parser.add_argument("--offer", help="the offer id, when the dataset has several")
    parser.add_argument("--purpose", default="academic-research")
    parser.add_argument("--agreement", help="an agreement already concluded: only fetch")
    parser.add_argument("--out", required=True, help="where the data goes on this machine")
    args = parser.parse_args()
    if not args.token:
        parser.error("a token is needed: --token or BAYSPACE_TOKEN")
    if not args.ca:
        parser.error("the node's certificate is needed: --ca or BAYSPACE_CA")
    metadata = [("authorization", f"Bearer {args.token}")]
    summary = {}
    started = time.monotonic()
    try:
        with open_channel(args.node, args.ca) as channel:
            agreement = args.agreement
            if not agreement:
                dataset = args.dataset
                if not dataset:
                    found = list(search(args.node, args.token, args.query, ca=args.ca))
                    if not found:
                        log(f"no dataset matches {args.query!r}")
                        return 1
                    dataset = found[0].id
                    log(f"found {found[0].title!r} ({dataset}) from {found[0].publisher}")
                n = request_and_follow(channel, metadata, dataset, args.purpose, args.offer)
                summary.update(negotiation=n.id, state=n.state)
                if n.state != "FINALIZED":
                    summary["reasons"] = list(n.reasons)
                    print(json.dumps(summary))
                    return 2
                agreement = n.agreement_id
            fetch_sealed(channel, metadata, agreement)
            size, resumed, digest = download(channel, metadata, agreement, args.out)
    except grpc.RpcError as e:
        log(f"the node refused: {e.code().name}: {e.details()}")
        return 1
    except (RuntimeError, OSError) as e:
        log(str(e))
        return 1
    summary.update(agreement=agreement, path=args.out, bytes=size, resumed_bytes=resumed,
                   blake3=digest, seconds=round(time.monotonic() - started, 3))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
