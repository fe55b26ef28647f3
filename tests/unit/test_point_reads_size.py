"""How a PostgreSQL store splits ``--pool-size`` between reads by id on the event loop and the worker threads."""

from __future__ import annotations

from fhir_imaging.storage.postgres import point_reads_size


def test_a_quarter_of_the_pool_serves_reads_by_id_and_the_total_stays_within_the_pool_size() -> None:
    assert point_reads_size(20) == 5
    assert point_reads_size(1) == point_reads_size(2) == 1
    for pool_size in range(2, 200):
        reads = point_reads_size(pool_size)
        assert 1 <= reads < pool_size and reads + max(1, pool_size - reads) == pool_size
