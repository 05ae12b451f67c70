"""The executors (local, processes, ray) run the same jobs to the same results, and a tiny grid run as Ray tasks
writes the same records, field for field, as the same grid run one cell after another in this process."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from kdbench import grid
from kdbench.errors import KdbenchError
from kdbench.executor import _task_resources, resolve_executor, run_jobs
from tests.helpers import tiny_profile

# what a record may legitimately differ in between two runs of the same cell: clocks, memory, the machine, and
# what the caches already held (teachers_from_cache, teacher_output_cache)
VOLATILE = ("env", "finished_at", "path", "peak_memory_bytes")
VOLATILE_PARTS = ("time_s", "per_s", "latency", "cache")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (it takes 10-20 s to start on 2 cores)."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _square_and_threads(job: tuple[int]) -> tuple[int, int]:
    return job[0] ** 2, torch.get_num_threads()


def _fail(job: tuple[str]) -> None:
    raise KdbenchError(job[0])


@pytest.mark.parametrize("executor, workers", [("local", None), ("processes", 2), ("ray", 2)])
def test_every_executor_returns_every_result_with_its_threads(executor, workers, request):
    if executor == "ray":
        request.getfixturevalue("local_ray")
    before = torch.get_num_threads()
    out = list(
        run_jobs(
            _square_and_threads,
            [(i,) for i in range(5)],
            workers,
            progress=False,
            executor=executor,
            threads=2,
        )
    )
    assert sorted(square for square, _ in out) == [0, 1, 4, 9, 16]  # any order: results come as they finish
    assert {threads for _, threads in out} == {2}
    assert torch.get_num_threads() == before  # the local executor gives this process its threads back


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_jobs_error_comes_back_as_itself(executor, request):
    if executor == "ray":
        request.getfixturevalue("local_ray")
    with pytest.raises(KdbenchError) as err:
        list(run_jobs(_fail, [("bad value in job",)], progress=False, executor=executor))
    assert str(err.value) == "bad value in job"  # one line, as the CLI prints it, not a remote traceback


def test_ray_refuses_a_task_no_node_can_hold(local_ray):
    with pytest.raises(KdbenchError, match="no node of the Ray cluster has 3 CPUs"):
        list(run_jobs(_square_and_threads, [(1,)], progress=False, executor="ray", threads=3))


@pytest.mark.parametrize(
    "device, gpus_on_node, gpus_per_task",
    [
        ("cuda", 8, 1),
        ("auto", 8, 1),
        ("auto", 0, 0),
        ("cpu", 8, 0),
        ("cuda", 0, None),
    ],
)
def test_ray_tasks_ask_for_a_gpu_when_the_cells_run_on_cuda(device, gpus_on_node, gpus_per_task):
    cluster = SimpleNamespace(
        nodes=lambda: [
            {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # a dead node counts for nothing
            {"Alive": True, "Resources": {"CPU": 16.0, "GPU": float(gpus_on_node)}},
        ]
    )
    if gpus_per_task is None:
        with pytest.raises(KdbenchError, match="no node of the Ray cluster has 2 CPUs and a GPU"):
            _task_resources(cluster, device, 2)
    else:
        assert _task_resources(cluster, device, 2) == {"num_cpus": 2, "num_gpus": gpus_per_task}


def test_executor_choice():
    assert resolve_executor(None, None) == "local" and resolve_executor(None, 1) == "local"
    assert resolve_executor(None, 3) == "processes"  # what --workers 3 has always meant
    assert resolve_executor("processes", None) == "processes"
    with pytest.raises(KdbenchError, match="valid choices: local, processes, ray"):
        resolve_executor("dask", None)
    with pytest.raises(KdbenchError, match="needs the processes or ray executor"):
        resolve_executor("local", 2)
    with pytest.raises(KdbenchError, match="workers must be 0 or more"):
        resolve_executor("processes", -1)


def test_missing_ray_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails, as without the extra
    with pytest.raises(KdbenchError, match=r"needs Ray: pip install -e '\.\[ray\]'"):
        run_jobs(_square_and_threads, [], executor="ray")  # at the call, with nothing to run


TINY = tiny_profile("executors", ("kd",), teacher="cifar_resnet8", test_subset=200)  # kd and its reference


def _records(results_dir: Path) -> dict[str, dict]:
    records = {}
    for path in sorted((results_dir / "records").glob("*.json")):
        record = json.loads(path.read_text())
        records[record["cell_id"]] = {
            k: v for k, v in record.items() if k not in VOLATILE and not any(p in k for p in VOLATILE_PARTS)
        }
    return records


def test_every_executor_writes_the_records_of_a_sequential_run(local_ray, tmp_path):
    """Ray trains its own teacher (its own cache), so a teacher trained as a Ray task is compared too; the
    process pool reuses the local run's teacher and runs only the cells."""
    caches = {"local": "cache-local", "processes": "cache-local", "ray": "cache-ray"}
    runs = {}
    for executor, cache in caches.items():
        counts = grid.run_grid(
            TINY,
            tmp_path / executor,
            device="cpu",
            cache_dir=tmp_path / cache,
            workers=2 * (executor != "local") or None,
            progress=False,
            executor=executor,
            threads=1,
        )
        assert counts["ok"] == 2 and counts["failed"] == 0
        runs[executor] = _records(tmp_path / executor)
    assert local_ray.is_initialized()  # the grid leaves a Ray connection it did not open as it found it
    local = runs.pop("local")
    assert len(local) == 2 and all(r["student_top1"] > 0 and r["epoch_losses"] for r in local.values())
    for executor, records in runs.items():
        assert sorted(records) == sorted(local)
        for cell_id, record in local.items():
            for key in sorted(set(record) | set(records[cell_id])):
                assert records[cell_id].get(key) == record.get(key), (
                    f"{cell_id}: {key} differs with {executor}"
                )
