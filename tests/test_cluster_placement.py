"""Tasks go to the workers that read their shard (``lrc_kernels.cluster.eligible``)."""

from __future__ import annotations

import pytest

from lrc_kernels import cluster


def test_every_worker_reads_every_file():
    seen = {"tcp://a": [10, 20], "tcp://b": [10, 20]}
    assert cluster.eligible(["x", "y"], [10, 20], seen) == [None, None]


def test_node_local_copies_restrict_their_tasks():
    # b lacks y; c holds another version of x (another size)
    seen = {"tcp://a": [10, 20], "tcp://b": [10, -1], "tcp://c": [11, 20]}
    assert cluster.eligible(["x", "y"], [10, 20], seen) == [
        ["tcp://a", "tcp://b"],
        ["tcp://a", "tcp://c"],
    ]


def test_a_file_no_worker_reads_is_named():
    seen = {"tcp://a": [10, -1], "tcp://b": [10, 7]}
    with pytest.raises(FileNotFoundError, match="no worker of the cluster reads y"):
        cluster.eligible(["x", "y"], [10, 20], seen)


def test_no_worker_yet_restricts_nothing():
    assert cluster.eligible(["x"], [10], {}) == [None]


def test_readers_on_a_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1234")
    b.write_bytes(b"12")
    with distributed.Client(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as client:
        assert cluster.readers(client, [str(a), str(b)]) == [None, None]
