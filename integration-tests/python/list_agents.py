#!/usr/bin/env python3
"""An independent gRPC client for Bulwark, in Python with grpcio: compiles the .proto files
of the repository at run time and lists enrolled agents over mutual TLS.

usage: list_agents.py PROTO_DIR ENDPOINT CA_PEM [CERT_PEM KEY_PEM]

Prints one JSON line: {"agents": [...]} on success, {"error": CODE, "message": ...} when the
controller refuses (exit code 3). Without CERT_PEM/KEY_PEM it connects with no client
certificate.
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def compile_protos(proto_dir: str, out: str) -> None:
    pkg = os.path.join(proto_dir, "bulwark", "v1")
    files = sorted(f"bulwark/v1/{f}" for f in os.listdir(pkg) if f.endswith(".proto"))
    args = ["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {files}")


def main() -> int:
    proto_dir, endpoint, ca_path = sys.argv[1:4]
    with tempfile.TemporaryDirectory(prefix="bulwark-py-") as out:
        compile_protos(proto_dir, out)
        sys.path.insert(0, out)
        return list_agents(endpoint, ca_path)


def list_agents(endpoint: str, ca_path: str) -> int:
    from bulwark.v1 import fleet_pb2, fleet_pb2_grpc  # noqa: E402 (generated above)

    with open(ca_path, "rb") as f:
        ca = f.read()
    cert = key = None
    if len(sys.argv) == 6:
        with open(sys.argv[4], "rb") as f:
            cert = f.read()
        with open(sys.argv[5], "rb") as f:
            key = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(endpoint, creds) as channel:
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        try:
            reply = stub.ListAgents(fleet_pb2.ListAgentsRequest(), timeout=10)
        except grpc.RpcError as e:
            print(json.dumps({"error": e.code().name, "message": e.details()}))
            return 3
    agents = [{"id": a.id, "hostname": a.hostname, "labels": dict(a.labels)} for a in reply.agents]
    print(json.dumps({"agents": agents, "revision": reply.revision}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
