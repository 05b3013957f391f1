"""An independent gRPC client of comfyfleet, written against the .proto files only.

Generates Python stubs from proto/ into a fresh directory with grpcio-tools, submits a workflow,
watches it to its end and prints one JSON line describing what it saw. Exits non-zero on any
deviation, so the Rust test that spawns it fails loudly.

Usage: grpc_client.py ADDRESS PROTO_DIR WORKFLOW_FILE OUT_DIR
"""

import json
import os
import sys


def main() -> int:
    address, proto_dir, workflow_path, out_dir = sys.argv[1:5]
    try:
        import grpc
        from grpc_tools import protoc
    except ImportError as error:
        print(f"missing python package: {error}; run tests/run.sh to install", file=sys.stderr)
        return 2

    protos = [
        os.path.join("comfyfleet", "v1", name)
        for name in sorted(os.listdir(os.path.join(proto_dir, "comfyfleet", "v1")))
        if name.endswith(".proto")
    ]
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(
        ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{include}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    )
    if code != 0:
        print(f"protoc failed with {code}", file=sys.stderr)
        return 3
    sys.path.insert(0, out_dir)
    from comfyfleet.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

    with open(workflow_path, "rb") as handle:
        workflow = handle.read()
    with grpc.insecure_channel(address) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        submitted = jobs.SubmitJob(
            job_service_pb2.SubmitJobRequest(workflow=workflow, tenant="python"), timeout=10
        )
        kinds = []
        sequences = []
        snapshot_state = None
        outputs = []
        for item in jobs.WatchJob(
            job_service_pb2.WatchJobRequest(job_id=submitted.job_id), timeout=60
        ):
            which = item.WhichOneof("item")
            if which == "snapshot":
                snapshot_state = job_pb2.JobState.Name(item.snapshot.state)
            elif which == "event":
                kind = item.event.WhichOneof("kind")
                kinds.append(kind)
                sequences.append(item.event.sequence)
                if kind == "succeeded":
                    outputs = [o.filename for o in item.event.succeeded.outputs]
        final = jobs.GetJob(job_service_pb2.GetJobRequest(job_id=submitted.job_id), timeout=10)
    print(json.dumps({
        "job_id": submitted.job_id,
        "submitted_state": job_pb2.JobState.Name(submitted.state),
        "snapshot_state": snapshot_state,
        "kinds": kinds,
        "sequences": sequences,
        "outputs": outputs,
        "final_state": job_pb2.JobState.Name(final.job.state),
        "tenant": final.job.tenant,
    }))
    return 0 if kinds and kinds[-1] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
