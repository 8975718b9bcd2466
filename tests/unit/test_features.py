"""Memoized feature probes, and the BPF_F_CPU / BPF_F_ALL_CPUS paths of Linux 7.0 against a fake kernel
that has them (and one that has not)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import percpu
from percpu import _machine, features
from percpu.layout import BPF_F_ALL_CPUS, BPF_F_CPU, Layout

from .fake_kernel import FakeKernel, installed

GAPPED = (0, 2, 3, 5)


@pytest.fixture
def flagged() -> FakeKernel:
    kernel = FakeKernel(len(GAPPED), cpu_ids=GAPPED, cpu_flag=True)
    with installed(kernel):
        yield kernel


def test_the_cpu_flag_probe_runs_once_per_kernel(flagged: FakeKernel) -> None:
    assert features.cpu_flag() is True
    creates = flagged.calls.count("map_create")
    assert features.cpu_flag() is True
    assert flagged.calls.count("map_create") == creates  # memoized
    older = FakeKernel(2)
    with installed(older):
        assert features.cpu_flag() is False  # another kernel, its own answer


def test_a_fd_holder_without_cap_bpf_reads_one_cpu_through_the_whole_element() -> None:
    """The probe creates a map; a process holding a map fd but not allowed to create maps used to get
    PermissionDenied from lookup_cpu/update_cpu. It falls back to the whole-element path instead."""
    kernel = FakeKernel(len(GAPPED), cpu_ids=GAPPED, cpu_flag=True)
    with installed(kernel), percpu.PerCpuArray.create(np.uint64, 2) as m:
        kernel.deny_ops.add("map_create")  # holds the map's fd, may not create maps
        m.update_cpu(1, 5, 42)
        assert m.lookup_cpu(1, 5) == 42
        assert m[1].to_dict() == {0: 0, 2: 0, 3: 0, 5: 42}
        assert features.known(features.CPU_FLAG) is None  # not remembered: asked again next time
        with pytest.raises(percpu.PermissionDenied):  # doctor's strict question still says why
            percpu.maps.cpu_flag_supported()


def test_update_all_writes_one_value_with_bpf_f_all_cpus(flagged: FakeKernel) -> None:
    dt = np.dtype([("a", "<u4"), ("b", "<u2")])  # 6 bytes, stride 8
    with percpu.PerCpuHash.create(np.uint32, dt, 4) as m:
        features.cpu_flag()
        flagged.calls.clear()
        m.update_all(7, (3, 4))
        assert flagged.calls == ["map_update"]
        assert {c: (int(v["a"]), int(v["b"])) for c, v in m[7].items()} == {c: (3, 4) for c in GAPPED}


def test_one_cpu_snapshot_copies_one_cpus_values(flagged: FakeKernel) -> None:
    n = 10
    with percpu.PerCpuHash.create(np.uint32, np.uint32, 16) as m:
        keys = np.arange(n, dtype=np.uint32)
        vals = (keys[:, None] * 100 + np.arange(len(GAPPED))).astype(np.uint32)
        m.update_batch(keys, vals)
        features.cpu_flag()
        flagged.bytes_out = 0
        one = m.snapshot(cpu=3)
        assert flagged.bytes_out == n * 4  # one unpadded u32 per key, not 4 CPUs x 8 bytes
        assert one.cpus == (3,) and not one.percpu
        order = np.argsort(one.keys)
        assert (one.values[order] == vals[:, GAPPED.index(3)]).all()
        flagged.bytes_out = 0
        full = m.snapshot()
        assert flagged.bytes_out == n * 8 * len(GAPPED)
        assert (full.cpu(3) == one.values).all()


def test_one_cpu_snapshot_falls_back_to_the_column_without_the_flag() -> None:
    kernel = FakeKernel(len(GAPPED), cpu_ids=GAPPED)
    with installed(kernel), percpu.PerCpuArray.create(np.uint16, 3) as m:
        m.update_batch([0, 1, 2], [[c + 10 * k for c in GAPPED] for k in range(3)])
        kernel.bytes_out = 0
        one = m.snapshot(cpu=5)
        assert list(one.values) == [5, 15, 25] and one.cpus == (5,)
        assert kernel.bytes_out == 3 * 8 * len(GAPPED)  # the whole map was read
        with pytest.raises(percpu.CpuNotPossible):
            m.snapshot(cpu=4)


def test_the_fake_kernel_refuses_what_linux_7_refuses(flagged: FakeKernel) -> None:
    """The fake's flag semantics, as the facts file gives them: EINVAL for a CPU id without BPF_F_CPU,
    both flags at once, BPF_F_ALL_CPUS on a lookup, a map type without per-CPU values; ERANGE past the
    possible CPUs."""
    b = _machine.current().kernel
    with percpu.PerCpuArray.create(np.uint64, 1) as m, percpu.Array.create(np.uint64, 1) as shared:
        lay = m.layout
        key, val = lay.key_buffer(), lay.value_buffer()
        for flags, err in (
            (3 << 32, errno.EINVAL),
            (BPF_F_CPU | BPF_F_ALL_CPUS, errno.EINVAL),
            (BPF_F_ALL_CPUS, errno.EINVAL),
            (BPF_F_CPU | (6 << 32), errno.ERANGE),
        ):
            with pytest.raises(OSError) as e:
                b.map_lookup(m.fd, key, val, lay, flags)
            assert e.value.errno == err, hex(flags)
        with pytest.raises(OSError) as e:
            b.map_update(m.fd, key, val, lay, BPF_F_CPU | (6 << 32))
        assert e.value.errno == errno.ERANGE
        slay = shared.layout
        with pytest.raises(OSError) as e:
            b.map_lookup(shared.fd, slay.key_buffer(), slay.value_buffer(), slay, BPF_F_CPU)
        assert e.value.errno == errno.EINVAL


def test_cpu_lists_that_disagree_with_the_kernels_count_are_refused() -> None:
    """Per-CPU buffers follow the kernel's count; CPU lists of another length used to size them (a
    public topology= argument), and the kernel wrote past the buffer. Now they are refused, typed."""
    kernel = FakeKernel(4)
    with open(os.path.join(kernel.machine.cpu_root, "possible"), "w", encoding="ascii") as f:
        f.write("0-1\n")
    with installed(kernel):
        with pytest.raises(percpu.TopologyMismatch, match="kernel counts 4 possible CPUs"):
            percpu.PerCpuArray.create(np.uint64, 1)
        assert "map_lookup" not in kernel.calls


def test_batch_support_is_learned_once_per_map_type() -> None:
    kernel = FakeKernel(2, batch=False)
    with installed(kernel), percpu.PerCpuHash.create(np.uint32, np.uint64, 8) as m:
        m.update_all(1, 1)
        assert len(m.snapshot()) == 1
        assert features.known(features.BATCH_OPS, percpu.MapType.PERCPU_HASH) is False
        kernel.calls.clear()
        m.update_batch([2, 3], [5, 6])  # no batch attempt now: the kernel said no once
        assert "map_update_batch" not in kernel.calls and len(m.snapshot()) == 3
        assert "map_lookup_batch" not in kernel.calls


def test_a_layout_names_what_the_binding_checks() -> None:
    assert Layout(4, 12, 3, True).value_bytes() == 48


@pytest.mark.parametrize("batch", [True, False])
def test_the_batch_probe_runs_once_per_map_type_and_closes_its_map(batch: bool) -> None:
    kernel = FakeKernel(len(GAPPED), cpu_ids=GAPPED, batch=batch)
    with installed(kernel):
        for t in (percpu.MapType.PERCPU_HASH, percpu.MapType.PERCPU_ARRAY):
            assert features.batch_ops(t) is batch
            assert features.known(features.BATCH_OPS, t) is batch
        assert kernel.calls.count("map_create") == 2 and kernel.calls.count("map_lookup_batch") == 2
        assert features.batch_ops(percpu.MapType.PERCPU_HASH) is batch  # memoized: no third map
        assert kernel.calls.count("map_create") == 2
        assert kernel.fds == {}  # the probe maps are closed
    with installed(FakeKernel(2, batch=not batch)):
        assert features.batch_ops(percpu.MapType.PERCPU_HASH) is not batch  # another kernel's answer


def test_the_batch_probe_and_the_maps_share_one_answer() -> None:
    """A map that learned "no batch ops" answers the probe without a probe map; a probe's "no" makes
    the next snapshot walk the keys without trying a batch."""
    kernel = FakeKernel(2, batch=False)
    with installed(kernel), percpu.PerCpuHash.create(np.uint32, np.uint64, 8) as m:
        m.update_all(1, 1)
        m.snapshot()
        kernel.calls.clear()
        assert features.batch_ops(percpu.MapType.PERCPU_HASH) is False
        assert kernel.calls == []
        assert features.batch_ops(percpu.MapType.LRU_PERCPU_HASH) is False
        with percpu.LruPerCpuHash.create(np.uint32, np.uint64, 8) as lru:
            lru.update_all(1, 1)
            kernel.calls.clear()
            assert len(lru.snapshot()) == 1
            assert "map_lookup_batch" not in kernel.calls


def test_the_batch_probe_without_privileges() -> None:
    kernel = FakeKernel(2)
    kernel.deny_ops.add("map_create")
    with installed(kernel):
        assert features.batch_ops(percpu.MapType.PERCPU_ARRAY) is False
        assert features.known(features.BATCH_OPS, percpu.MapType.PERCPU_ARRAY) is None  # asked again
        with pytest.raises(percpu.PermissionDenied, match="probe batch ops: create map"):
            features.batch_ops(percpu.MapType.PERCPU_ARRAY, strict=True)


def test_the_batch_probe_refuses_a_map_type_it_cannot_create() -> None:
    with installed(FakeKernel(2)), pytest.raises(percpu.PercpuError, match="map type 27"):
        features.batch_ops(27)
