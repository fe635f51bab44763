"""The KubeRay manifests in docs/cluster: well-formed RayJobs whose entrypoint is a valid
``hfr`` command, whose volumes and images are consistent, and whose GPU requests add up."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from hfr.cli import build_parser

MANIFESTS = sorted((Path(__file__).resolve().parents[1] / "docs" / "cluster").glob("*.yaml"))


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_a_consistent_rayjob_running_a_valid_hfr_command(path: Path) -> None:
    job = yaml.safe_load(path.read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"].replace("-", "").isalnum()
    spec = job["spec"]
    command = shlex.split(spec["entrypoint"])
    assert command[0] == "hfr"
    args = build_parser().parse_args(command[1:])  # exits (SystemExit) on an invalid command
    assert args.ray == "auto", "on a cluster the job joins the Ray that KubeRay started"
    runtime = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "hfr[ray]" in runtime["pip"]
    cluster = spec["rayClusterSpec"]
    version = cluster["rayVersion"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    gpus = 0
    for group in groups:
        volumes = {v["name"] for v in group["template"]["spec"].get("volumes", [])}
        for container in _containers(group):
            assert container["image"].startswith(f"rayproject/ray:{version}-")
            resources = container["resources"]
            assert resources["requests"] == resources["limits"]  # guaranteed QoS
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
            gpus_here = int(resources["limits"].get("nvidia.com/gpu", 0))
            if gpus_here:
                assert container["image"].endswith("-gpu")
            gpus += gpus_here * group.get("maxReplicas", 1)
    for worker in cluster["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
    wanted = getattr(args, "gpus_per_task", 0) or getattr(args, "gpus_per_worker", 0) or 0
    if args.command == "predict":
        assert args.workers * wanted <= gpus, "the actor pool asks for more GPUs than exist"
        assert args.resume and args.output.startswith("/results")
    else:
        assert 0 < wanted <= 1 and args.all and args.output == "/models"


def test_there_is_a_manifest_for_training_and_for_scoring() -> None:
    commands = {yaml.safe_load(p.read_text())["spec"]["entrypoint"].split()[1] for p in MANIFESTS}
    assert commands == {"train", "predict"}
