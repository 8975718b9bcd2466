"""``percpu dump`` against the fake kernel: key parsing, argument checks, one CPU's values, a path that is
not a pin."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import percpu
from percpu.cli import build_parser, main

from .fake_kernel import FakeKernel, installed

N = len(percpu.topology().possible)  # dump sizes buffers from the real sysfs list


def dump_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    assert main(["dump", *argv, "--json"]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("text", ["9", "0x9", "0X09", "09"])
def test_integer_keys_without_btf(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with installed(FakeKernel(N)):
        m = percpu.PerCpuHash.create(np.uint32, np.dtype((np.void, 3)), 4)
        m.update(9, [b"\x01\x02\x03"] * N)
        m.update(1, [b"\x04\x05\x06"] * N)
        with m:
            (row,) = dump_json(capsys, str(m.info.id), "--key", text)
    assert row["key"] == (9).to_bytes(4, sys.byteorder).hex()  # shown as a dump shows it
    assert [v["value"] for v in row["values"]] == ["010203"] * N  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "a 4-byte key is 0..4294967295"),
        ("4294967296", "a 4-byte key is 0..4294967295"),
        ("zz", "give it as an integer, decimal or 0x hex"),
        ("0x2", f"has no key 0x2 (bytes {(2).to_bytes(4, sys.byteorder).hex()})"),
    ],
)
def test_bad_integer_keys_without_btf(capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    with installed(FakeKernel(N)), percpu.PerCpuHash.create(np.uint32, np.uint64, 4) as m:
        m.update(9, [1] * N)
        assert main(["dump", str(m.info.id), "--key", text]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_other_key_sizes_without_btf_take_hex_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    with installed(FakeKernel(N)), percpu.Hash.create(np.dtype((np.void, 3)), np.uint64, 4) as m:
        m.update(b"\x0a\x0b\x0c", 5)
        (row,) = dump_json(capsys, str(m.info.id), "--key", "0a0b0c")
        assert row == {"key": "0a0b0c", "value": (5).to_bytes(8, sys.byteorder).hex()}
        assert main(["dump", str(m.info.id), "--key", "5"]) == 1
        assert "give the 3-byte key as hex bytes" in capsys.readouterr().err
        assert main(["dump", str(m.info.id), "--key", "0a0b"]) == 1
        assert "2 bytes; the map's keys are 3 bytes" in capsys.readouterr().err


def test_key_help_says_what_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dump", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1, 2, 4 or 8-byte key without a type: a decimal or 0x hex integer" in text
    assert "Any other key without a type: its bytes in hex" in text
    assert "A char[N] key: its text" in text
    assert "--value-type TYPE" in text and "pid:u32,comm:char[16],n:u64" in text


@pytest.mark.parametrize("limit", ["-1", "-5", "x"])
def test_limit_must_be_a_count(capsys: pytest.CaptureFixture[str], limit: str) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["dump", "1", "--limit", limit])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --limit:" in err and ("must be 0 or more" in err or "not a whole number" in err)


@pytest.mark.parametrize(("limit", "rows"), [("0", 4), ("2", 2), ("9", 4)])
def test_limit(capsys: pytest.CaptureFixture[str], limit: str, rows: int) -> None:
    with installed(FakeKernel(N)), percpu.PerCpuArray.create(np.uint64, 4) as m:
        assert len(dump_json(capsys, str(m.info.id), "--limit", limit)) == rows


@pytest.mark.parametrize("flag", [["--cpu", "0"], ["--sum"]])
def test_per_cpu_options_on_a_map_that_is_not_per_cpu(
    capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    with installed(FakeKernel(N)), percpu.Array.create(np.uint64, 2) as m:
        assert main(["dump", str(m.info.id), *flag]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"(ARRAY) is not a per-CPU map: it has one value per key; {flag[0]} applies only to per-CPU" in err


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/status"])
def test_dump_of_a_file_elsewhere_makes_no_bpf_call(capsys: pytest.CaptureFixture[str], path: str) -> None:
    kernel = FakeKernel(N)
    with installed(kernel):
        assert main(["dump", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"percpu: {path} is not in a BPF file system (bpffs)")
    assert kernel.calls == []


def test_dump_one_cpu_copies_only_that_cpus_values(capsys: pytest.CaptureFixture[str]) -> None:
    """dump --cpu reads one CPU's values with BPF_F_CPU where the kernel has it (Linux 7.0)."""
    kernel = FakeKernel(3, cpu_ids=(0, 4, 9), cpu_flag=True)
    with installed(kernel):
        m = percpu.PerCpuHash.create(np.uint32, np.uint32, 8, name="one_cpu")
        m.update_batch([1, 2], [[10, 14, 19], [20, 24, 29]])
        assert percpu.maps.cpu_flag_supported()  # probed now, so its own read is not counted below
        kernel.bytes_out = 0
        args = ["dump", str(m.info.id), "--cpu", "4", "-j", "--key-type", "u32", "--value-type", "u32"]
        assert main(args) == 0
        m.close()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["key"], r["cpu"], r["value"]) for r in rows) == [(1, 4, 14), (2, 4, 24)]
    assert kernel.bytes_out == 2 * 4  # one u32 per key, not three CPUs' padded values


def test_json_has_a_short_form() -> None:
    assert build_parser().parse_args(["dump", "1", "-j"]).json is True
