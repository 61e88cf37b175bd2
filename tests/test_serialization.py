"""fusionnet.save / fusionnet.load: round trips, atomic writes, and hostile files."""
from __future__ import annotations

import builtins
import io
import json
import math
import os
import pickle  # only to craft a hostile file: the library itself never uses pickle
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import fusionnet as fn
from fusionnet import serialization as ser
from fusionnet.serialization import SerializationError


def same(a, b) -> bool:
    """Bit-identical tensors: same type, dtype, shape, device, requires_grad and bytes."""
    return (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
            and a.device == b.device and a.requires_grad == b.requires_grad
            and a._host().tobytes() == b._host().tobytes())


def roundtrip(obj, tmp_path, **kw):
    path = tmp_path / "obj.fn"
    fn.save(obj, path)
    return fn.load(path, **kw)


# ---- round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: fn.randn(3, 4),
    lambda: fn.randn(2, 3, dtype=fn.float64),
    lambda: fn.tensor([[1, -2], [3, 2**40]], dtype=fn.int64),
    lambda: fn.tensor([1, -7, 2**31 - 1], dtype=fn.int32),
    lambda: fn.tensor([True, False, True]),
    lambda: fn.tensor(3.5),                       # 0-d
    lambda: fn.zeros(0, 3),                       # empty
    lambda: fn.ones(1, 1, 1, 2, 1),
    lambda: fn.randn(4, 5).transpose(0, 1),       # not C-contiguous
    lambda: fn.tensor([float("nan"), float("inf"), -0.0, 1e-45]),
], ids=["f32", "f64", "i64", "i32", "bool", "0d", "empty", "ones5d", "transposed", "special"])
def test_tensor_round_trip_is_bit_identical(make, tmp_path):
    x = make()
    y = roundtrip(x, tmp_path)
    assert same(x, y)
    assert y._data.flags.c_contiguous and y._data.flags.writeable


def test_requires_grad_is_kept_for_leaves_and_loaded_tensors_are_leaves(tmp_path):
    w = fn.randn(3, requires_grad=True)
    h = (w * 2).sum()  # not a leaf: loads as a leaf that requires grad, as in PyTorch
    a, b, c = roundtrip([w, fn.randn(2), h], tmp_path)
    assert a.requires_grad and a.is_leaf and same(a, w)
    assert not b.requires_grad
    assert c.requires_grad and c.is_leaf and c.item() == h.item()
    (a * a).sum().backward()
    assert np.array_equal(a.grad.numpy(), 2 * w.detach().numpy())


def test_nested_containers_keep_types_order_and_values(tmp_path):
    x, y = fn.randn(2), fn.arange(3)
    obj = {
        "z": [x, (y, [1, 2.5]), ()],
        "a": (x,),
        "n": {"int": -(2**70), "float": 0.1, "nan": float("nan"), "inf": -math.inf,
              "str": "héllo\u2603 \"q\"", "bool": True, "none": None, "empty": {}},
        7: "int key", 2.5: "float key", None: "none key", True: "bool key",
        "meta": [fn.Size([2, 3]), fn.float64, fn.device("cuda:1"), fn.device("cpu")],
        "od": OrderedDict([("b", 1), ("a", 2)]),
    }
    out = roundtrip(obj, tmp_path)
    assert type(out) is dict and list(out) == list(obj)
    assert type(out["z"]) is list and type(out["z"][1]) is tuple and type(out["a"]) is tuple
    assert out["z"][2] == () and type(out["z"][2]) is tuple
    assert same(out["z"][0], x) and same(out["z"][1][0], y) and out["z"][1][1] == [1, 2.5]
    n = out["n"]
    assert n["int"] == -(2**70) and type(n["int"]) is int
    assert n["float"] == 0.1 and math.isnan(n["nan"]) and n["inf"] == -math.inf
    assert n["str"] == obj["n"]["str"] and n["bool"] is True and n["none"] is None
    assert n["empty"] == {}
    assert out[7] == "int key" and out[2.5] == "float key" and out[None] == "none key"
    assert out[True] == "bool key"
    size, dt, gpu, cpu = out["meta"]
    assert type(size) is fn.Size and size == (2, 3)
    assert dt is fn.float64 and gpu == fn.device("cuda", 1) and cpu == fn.device("cpu")
    assert type(out["od"]) is OrderedDict and list(out["od"].items()) == [("b", 1), ("a", 2)]


@pytest.mark.parametrize("value", [0, -1, 2**63, 1.5, -0.0, 5e-324, "", "x", True, False, None,
                                   [], (), {}, [[[]]]])
def test_plain_values_round_trip(value, tmp_path):
    out = roundtrip(value, tmp_path)
    assert out == value and type(out) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, out) == math.copysign(1, value)


def test_numpy_scalars_are_saved_as_python_numbers(tmp_path):
    out = roundtrip([np.float32(0.5), np.int64(3), np.bool_(True)], tmp_path)
    assert out == [0.5, 3, True] and [type(v) for v in out] == [float, int, bool]


def test_state_dict_like_ordered_dict_round_trips_as_ordered_dict(tmp_path):
    sd = OrderedDict([("layer.weight", fn.randn(4, 3)), ("layer.bias", fn.zeros(4)),
                      ("bn.num_batches_tracked", fn.tensor(5))])
    out = roundtrip(sd, tmp_path)
    assert type(out) is OrderedDict and list(out) == list(sd)
    assert all(same(out[k], sd[k]) for k in sd)


def test_the_same_tensor_is_stored_once_and_loaded_as_one_object(tmp_path):
    w = fn.randn(1000)
    path = tmp_path / "tied.fn"
    fn.save({"a": w, "b": w, "c": [w]}, path)
    out = fn.load(path)
    assert out["a"] is out["b"] is out["c"][0]
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["data/0.npy", "manifest.json"]


def test_saving_is_deterministic(tmp_path):
    obj = {"w": fn.arange(10), "x": [1.5, "a"]}
    fn.save(obj, tmp_path / "a.fn")
    fn.save(obj, tmp_path / "b.fn")
    assert (tmp_path / "a.fn").read_bytes() == (tmp_path / "b.fn").read_bytes()


def test_paths_and_file_objects(tmp_path):
    x = fn.randn(3)
    fn.save(x, str(tmp_path / "s.fn"))                     # str path
    assert same(fn.load(str(tmp_path / "s.fn")), x)
    buf = io.BytesIO()                                     # in-memory file object
    fn.save(x, buf)
    assert same(fn.load(io.BytesIO(buf.getvalue())), x)
    with open(tmp_path / "f.fn", "wb") as fh:              # real binary file object
        fn.save(x, fh)
    with open(tmp_path / "f.fn", "rb") as fh:
        assert same(fn.load(fh), x)


def test_load_from_a_non_seekable_stream(tmp_path):
    buf = io.BytesIO()
    fn.save([fn.ones(2)], buf)

    class Stream(io.RawIOBase):
        def __init__(self, data):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, b):
            return self.inner.readinto(b)

    assert same(fn.load(Stream(buf.getvalue()))[0], fn.ones(2))


def test_saved_file_is_a_zip_with_a_json_manifest_and_npy_members(tmp_path):
    path = tmp_path / "m.fn"
    fn.save({"w": fn.randn(2, 3, requires_grad=True)}, path)
    with zipfile.ZipFile(path) as zf:
        m = json.loads(zf.read("manifest.json"))
        arr = np.load(io.BytesIO(zf.read("data/0.npy")), allow_pickle=False)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    assert m["format"] == "fusionnet" and m["version"] == 1
    assert m["tensors"] == [{"dtype": "float32", "shape": [2, 3], "device": "cpu",
                             "requires_grad": True, "parameter": False}]
    assert m["root"] == {"type": "dict", "items": [[{"type": "str", "value": "w"},
                                                    {"type": "tensor", "index": 0}]]}
    assert arr.shape == (2, 3) and arr.dtype == np.float32


def test_file_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fn.save(1, tmp_path / "p.fn")
    finally:
        os.umask(old)
    assert (tmp_path / "p.fn").stat().st_mode & 0o777 == 0o644


def test_saving_through_a_symlink_keeps_the_link(tmp_path):
    target = tmp_path / "real.fn"
    link = tmp_path / "link.fn"
    fn.save(1, target)
    link.symlink_to(target)
    fn.save(2, link)
    assert link.is_symlink() and fn.load(target) == 2


# ---- what cannot be saved ------------------------------------------------------------------

@pytest.mark.parametrize("obj, what", [
    ({"a": object()}, "obj['a'] is a builtins.object"),
    ([1, {2, 3}], "obj[1] is a builtins.set"),
    ({(1, 2): 3}, "has a key of type tuple"),
    (b"bytes", "is a builtins.bytes"),
])
def test_unsupported_objects_raise_naming_where_they_are(obj, what, tmp_path):
    path = tmp_path / "bad.fn"
    with pytest.raises(SerializationError, match="cannot save to") as info:
        fn.save(obj, path)
    assert what in str(info.value) and str(path) in str(info.value)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_reference_cycles_and_deep_nesting_are_refused(tmp_path):
    loop = [1]
    loop.append(loop)
    with pytest.raises(SerializationError, match="reference cycle"):
        fn.save(loop, tmp_path / "c.fn")
    deep = []
    for _ in range(ser.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(SerializationError, match="nested more than"):
        fn.save(deep, tmp_path / "d.fn")
    assert os.listdir(tmp_path) == []


def test_saving_into_a_missing_directory_or_onto_a_directory(tmp_path):
    with pytest.raises(SerializationError, match="cannot save to") as info:
        fn.save(1, tmp_path / "no" / "such" / "x.fn")
    assert "x.fn" in str(info.value)
    with pytest.raises(SerializationError, match="is a directory"):
        fn.save(1, tmp_path)


def test_bad_path_and_map_location_types():
    with pytest.raises(TypeError):
        fn.save(1, 42)
    with pytest.raises(TypeError):
        fn.load(42)
    with pytest.raises(TypeError, match="map_location"):
        fn.load("x.fn", map_location=3.5)


# ---- atomic writes -------------------------------------------------------------------------

def test_a_fault_mid_save_leaves_the_earlier_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.fn"
    old = {"w": fn.randn(5), "b": fn.randn(2)}
    fn.save(old, path)
    before = path.read_bytes()
    real, calls = ser._write_tensor, []

    def flaky(zf, name, t):
        calls.append(name)
        if len(calls) == 2:  # after the manifest and one tensor are already written
            raise RuntimeError("injected fault: disk on fire")
        real(zf, name, t)

    monkeypatch.setattr(ser, "_write_tensor", flaky)
    with pytest.raises(RuntimeError, match="injected fault"):
        fn.save({"w": fn.zeros(5), "b": fn.zeros(2)}, path)
    assert len(calls) == 2
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.fn"]
    out = fn.load(path)
    assert same(out["w"], old["w"]) and same(out["b"], old["b"])


def test_a_failing_rename_or_interrupt_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.fn"
    fn.save(1, path)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ser.os, "replace", boom)
    with pytest.raises(SerializationError, match="No space left"):
        fn.save(2, path)
    monkeypatch.undo()

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ser, "_write_tensor", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fn.save(fn.ones(3), path)
    assert os.listdir(tmp_path) == ["ckpt.fn"] and fn.load(path) == 1


def test_a_fault_before_the_first_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(zf, name, t):
        raise RuntimeError("injected")

    monkeypatch.setattr(ser, "_write_tensor", boom)
    with pytest.raises(RuntimeError):
        fn.save(fn.ones(3), tmp_path / "new.fn")
    assert os.listdir(tmp_path) == []


# ---- files that must be refused ------------------------------------------------------------

def good_file(tmp_path, obj=None) -> bytes:
    path = tmp_path / "good.fn"
    fn.save({"w": fn.arange(6, dtype=fn.float32).reshape(2, 3)} if obj is None else obj, path)
    return path.read_bytes()


def make_zip(members: dict, compress=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data if isinstance(data, bytes) else json.dumps(data))
    return buf.getvalue()


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def manifest(**over) -> dict:
    m = {"format": "fusionnet", "version": 1, "created_by": "test",
         "tensors": [{"dtype": "float32", "shape": [2], "device": "cpu",
                      "requires_grad": False, "parameter": False}],
         "root": {"type": "tensor", "index": 0}}
    m.update(over)
    return m


def refused(tmp_path, data: bytes, match: str | None):
    path = tmp_path / "bad.fn"
    path.write_bytes(data)
    with pytest.raises(SerializationError, match=match) as info:
        fn.load(path)
    assert str(path) in str(info.value)
    return info.value


def test_a_well_formed_crafted_file_loads(tmp_path):
    # The helpers below really do build valid files: the refusals are for the defects alone.
    data = make_zip({"manifest.json": manifest(), "data/0.npy": npy(np.ones(2, np.float32))})
    path = tmp_path / "ok.fn"
    path.write_bytes(data)
    assert same(fn.load(path), fn.ones(2))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.fn"
    with pytest.raises(SerializationError, match="does not exist") as info:
        fn.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_directory(tmp_path):
    with pytest.raises(SerializationError, match="is a directory"):
        fn.load(tmp_path)


@pytest.mark.parametrize("cut", [0, 1, 10, 100, -200, -22, -1])
def test_truncated_files(tmp_path, cut):
    data = good_file(tmp_path)
    refused(tmp_path, data[:cut], None)


def test_every_truncation_is_refused_cleanly(tmp_path):
    data = good_file(tmp_path)
    for cut in range(0, len(data), 7):
        refused(tmp_path, data[:cut], None)


def test_corrupted_data_bytes_fail_the_crc_check(tmp_path):
    data = bytearray(good_file(tmp_path))
    pos = data.rindex(struct.pack("<f", 5.0))  # the last element of the tensor's data
    data[pos] ^= 0x40
    refused(tmp_path, bytes(data), "corrupted")


def test_every_single_byte_corruption_raises_or_loads_the_right_thing(tmp_path):
    data = good_file(tmp_path)
    expect = fn.arange(6, dtype=fn.float32).reshape(2, 3)
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        path = tmp_path / "bad.fn"
        path.write_bytes(bytes(bad))
        try:
            out = fn.load(path)
        except SerializationError as err:
            assert str(path) in str(err)
        else:  # a flip in bytes zip readers ignore (e.g. local-header dates) is harmless
            assert list(out) == ["w"] and same(out["w"], expect)


@pytest.mark.parametrize("data, match", [
    (b"hello, I am a text file\n", "not a ZIP archive"),
    (b"", "not a ZIP archive"),
    (pickle.dumps({"w": [1, 2, 3]}), "not a ZIP archive"),
    (b"\x93NUMPY\x01\x00" + b"x" * 100, "not a ZIP archive"),
])
def test_foreign_files(tmp_path, data, match):
    refused(tmp_path, data, match)


def test_numpy_npz_and_plain_zip_without_manifest(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, a=np.ones(3))
    refused(tmp_path, buf.getvalue(), "without manifest.json")
    refused(tmp_path, make_zip({"readme.txt": b"hi"}), "without manifest.json")


def test_torch_style_zip_with_a_pickle_is_refused(tmp_path):
    refused(tmp_path, make_zip({"archive/data.pkl": pickle.dumps([1]),
                                "archive/version": b"3"}), "without manifest.json")


@pytest.mark.parametrize("over, match", [
    ({"format": "pytorch"}, "not a fusionnet file"),
    ({"version": 2}, "newer fusionnet .*version 2.*reads format version 1"),
    ({"version": 10**6}, "newer fusionnet"),
    ({"version": 0}, "bad format version"),
    ({"version": "1"}, "bad format version"),
    ({"version": True}, "bad format version"),
    ({"extra": 1}, "unknown \\['extra'\\]"),
    ({"created_by": 5}, "bad manifest.json fields"),
])
def test_bad_manifest_headers(tmp_path, over, match):
    data = make_zip({"manifest.json": manifest(**over), "data/0.npy": npy(np.ones(2, "f4"))})
    refused(tmp_path, data, match)


def test_manifest_missing_fields_or_not_an_object(tmp_path):
    m = manifest()
    del m["root"]
    refused(tmp_path, make_zip({"manifest.json": m, "data/0.npy": npy(np.ones(2, "f4"))}),
            "missing \\['root'\\]")
    refused(tmp_path, make_zip({"manifest.json": [1, 2]}), "not a fusionnet file")
    refused(tmp_path, make_zip({"manifest.json": b"{not json"}), "not valid JSON")
    refused(tmp_path, make_zip({"manifest.json": b"\xff\xfe"}), "not valid JSON")
    dup = b'{"format": "fusionnet", "format": "fusionnet", "version": 1}'
    refused(tmp_path, make_zip({"manifest.json": dup}), "repeats a key")
    nan = json.dumps(manifest(root={"type": "int", "value": float("nan")}),
                     allow_nan=True).encode()
    refused(tmp_path, make_zip({"manifest.json": nan, "data/0.npy": npy(np.ones(2, "f4"))}),
            "NaN")


def test_oversized_manifest_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(ser, "MAX_MANIFEST_BYTES", 1000)
    refused(tmp_path, make_zip({"manifest.json": b" " * 1001}), "over the limit")
    # and save refuses to write a file load would refuse
    with pytest.raises(SerializationError, match="byte limit"):
        fn.save(["x" * 2000], tmp_path / "big.fn")


def test_too_many_members_or_tensors(tmp_path, monkeypatch):
    monkeypatch.setattr(ser, "MAX_TENSORS", 3)
    members = {"manifest.json": manifest()}
    members.update({f"data/{i}.npy": npy(np.ones(2, "f4")) for i in range(5)})
    refused(tmp_path, make_zip(members), "members, over the limit")
    entry = manifest()["tensors"][0]
    m = manifest(tensors=[entry] * 4)
    refused(tmp_path, make_zip({"manifest.json": m, "data/0.npy": npy(np.ones(2, "f4"))}),
            "at most 3 entries")


def test_absurd_shapes_are_refused_before_allocating(tmp_path):
    entry = {"dtype": "float64", "shape": [2**40, 2**40], "device": "cpu",
             "requires_grad": False, "parameter": False}
    data = make_zip({"manifest.json": manifest(tensors=[entry]),
                     "data/0.npy": npy(np.ones(2, "f4"))})
    refused(tmp_path, data, "holds only")


@pytest.mark.parametrize("entry", [
    {"dtype": "object", "shape": [2]},
    {"dtype": "float16", "shape": [2]},
    {"dtype": "float32", "shape": [-2]},
    {"dtype": "float32", "shape": [2.0]},
    {"dtype": "float32", "shape": "2"},
    {"dtype": "float32", "shape": [1] * 65},
    {"device": "tpu:0"},
    {"device": 0},
    {"requires_grad": 1},
    {"dtype": "int64", "requires_grad": True},
    {"parameter": None},
    {"callable": "os.system"},
])
def test_bad_tensor_entries(tmp_path, entry):
    base = manifest()["tensors"][0]
    base.update(entry)
    data = make_zip({"manifest.json": manifest(tensors=[base]),
                     "data/0.npy": npy(np.ones(2, "f4"))})
    refused(tmp_path, data, "tensor entry 0 is malformed")


@pytest.mark.parametrize("arr, match", [
    (np.ones(2, np.float64), "expected descr '<f4'"),
    (np.ones(3, np.float32), "expected descr"),
    (np.ones(2, ">f4"), "expected descr"),
    (np.ones((2, 1), np.float32), "expected descr"),
    (np.ones((2, 2), np.float32, order="F")[:, 0].reshape(2), None),  # C-ordered copy: loads
])
def test_npy_member_must_match_the_manifest(tmp_path, arr, match):
    data = make_zip({"manifest.json": manifest(), "data/0.npy": npy(arr)})
    if match is None:
        path = tmp_path / "ok.fn"
        path.write_bytes(data)
        assert same(fn.load(path), fn.ones(2))
    else:
        refused(tmp_path, data, match)


def test_fortran_order_object_arrays_and_pickled_npy_are_refused(tmp_path):
    f_order = npy(np.asfortranarray(np.ones((2, 2), np.float32)))
    m = manifest(tensors=[dict(manifest()["tensors"][0], shape=[2, 2])])
    refused(tmp_path, make_zip({"manifest.json": m, "data/0.npy": f_order}), "C order")
    obj = io.BytesIO()
    np.save(obj, np.array([print, os.system], dtype=object), allow_pickle=True)
    refused(tmp_path, make_zip({"manifest.json": manifest(), "data/0.npy": obj.getvalue()}),
            "expected descr")


def test_npy_member_with_wrong_length_or_garbage_header(tmp_path):
    good = npy(np.ones(2, np.float32))
    for bad, match in [(good + b"\0\0\0\0", "holds"), (good[:-1], "holds"),
                       (b"NOTNUMPY" + good[8:], "not a .npy array"),
                       (good[:8] + b"\xff\xff" + good[10:], "runs past its end"),
                       (b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{",
                        "over the limit")]:
        refused(tmp_path, make_zip({"manifest.json": manifest(), "data/0.npy": bad}), match)
    evil = b"{'descr': __import__('os').system('echo pwned'), 'fortran_order': False}"
    header = evil + b" " * (64 - (10 + len(evil)) % 64 - 1) + b"\n"
    bad = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 8
    refused(tmp_path, make_zip({"manifest.json": manifest(), "data/0.npy": bad}), "unreadable")


def test_missing_extra_compressed_and_duplicate_members(tmp_path):
    refused(tmp_path, make_zip({"manifest.json": manifest()}), "data/0.npy is missing")
    refused(tmp_path, make_zip({"manifest.json": manifest(), "data/0.npy": npy(np.ones(2, "f4")),
                                "data/evil.pkl": pickle.dumps(1)}), "unexpected member")
    refused(tmp_path, make_zip({"manifest.json": manifest(), "data/0.npy": npy(np.ones(2, "f4"))},
                               compress=zipfile.ZIP_DEFLATED), "compressed")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, pytest.warns(UserWarning):
        zf.writestr("manifest.json", json.dumps(manifest()))
        zf.writestr("manifest.json", json.dumps(manifest()))
    refused(tmp_path, buf.getvalue(), "appears twice")


@pytest.mark.parametrize("root", [
    {"type": "tensor", "index": 1},
    {"type": "tensor", "index": -1},
    {"type": "tensor", "index": True},
    {"type": "list"},
    {"type": "list", "items": {}},
    {"type": "set", "items": []},
    {"type": "none", "value": 1},
    {"type": "int", "value": 1.5},
    {"type": "float", "value": 1.5},
    {"type": "float", "value": "0x1.zz"},
    {"type": "bool", "value": 1},
    {"type": "dtype", "value": "object"},
    {"type": "device", "value": "tpu"},
    {"type": "size", "items": [{"type": "str", "value": "2"}]},
    {"type": "dict", "items": [[{"type": "list", "items": []}, {"type": "none"}]]},
    {"type": "dict", "items": [[{"type": "int", "value": 1}, {"type": "none"}],
                               [{"type": "int", "value": 1}, {"type": "none"}]]},
    {"type": "dict", "items": [[{"type": "int", "value": 1}]]},
    {"type": "callable", "value": "os.system"},
    {"type": "global", "module": "os", "name": "system"},
    {"type": "str", "value": "x", "call": "os.system"},
    "os.system",
    ["os", "system"],
])
def test_bad_tree_nodes(tmp_path, root):
    data = make_zip({"manifest.json": manifest(root=root), "data/0.npy": npy(np.ones(2, "f4"))})
    refused(tmp_path, data, "bad node")


def test_absurdly_deep_trees(tmp_path):
    node = {"type": "none"}
    for _ in range(ser.MAX_DEPTH + 2):
        node = {"type": "list", "items": [node]}
    data = make_zip({"manifest.json": manifest(root=node), "data/0.npy": npy(np.ones(2, "f4"))})
    refused(tmp_path, data, "nested more than")
    deeper = b'{"format":"fusionnet","version":1,"tensors":[],"root":' + b"[" * 100_000
    refused(tmp_path, make_zip({"manifest.json": deeper}), "nests too deeply|not valid JSON")


def test_loading_imports_and_calls_nothing_the_file_names(tmp_path, monkeypatch):
    payload = pickle.dumps(os.system)  # unpickling this would import os and find system
    ran = []
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a))
    hostile = manifest(root={"type": "dict", "items": [
        [{"type": "str", "value": "os.system"}, {"type": "callable", "value": "os.system"}]]})
    data = make_zip({"manifest.json": hostile, "data/0.npy": npy(np.ones(2, "f4")),
                     "data/payload.pkl": payload})
    path = tmp_path / "hostile.fn"
    path.write_bytes(data)
    good = tmp_path / "good.fn"
    fn.save({"os.system": fn.ones(2), "__import__": "subprocess", "eval": [1.5, None]}, good)

    imports = []
    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        imports.append(name)
        return real_import(name, *args, **kwargs)

    def no_pickle(*a, **k):
        raise AssertionError("pickle must never be used by load()")

    fn.load(good)  # warm-up: the stdlib may import a codec lazily the first time (cp437)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(np, "load", no_pickle)
    error = None
    # Spy on imports only around load() itself: pytest's own helpers import modules.
    builtins.__import__ = spy
    try:
        try:
            fn.load(path)
        except SerializationError as err:
            error = err
        out = fn.load(good)
    finally:
        builtins.__import__ = real_import
    monkeypatch.undo()
    assert error is not None and str(path) in str(error)
    assert ran == [] and imports == []
    assert out["__import__"] == "subprocess" and same(out["os.system"], fn.ones(2))


def test_map_location_to_a_missing_gpu_is_a_clear_error(tmp_path, monkeypatch):
    devmod = sys.modules["fusionnet.device"]  # (fusionnet.device is the class)
    monkeypatch.setattr(devmod, "_cupy_tried", True)   # simulate a machine without CUDA
    monkeypatch.setattr(devmod, "_cupy", None)
    monkeypatch.setattr(devmod, "_cupy_reason", "CuPy is not installed")
    path = tmp_path / "x.fn"
    fn.save({"w": fn.ones(2)}, path)
    with pytest.raises(SerializationError, match="map_location='cpu'") as info:
        fn.load(path, map_location="cuda:0")
    assert str(path) in str(info.value) and "fusionnet[gpu]" in str(info.value)


def test_tensor_saved_on_an_absent_gpu_needs_map_location(tmp_path, monkeypatch):
    devmod = sys.modules["fusionnet.device"]  # (fusionnet.device is the class)
    monkeypatch.setattr(devmod, "_cupy_tried", True)
    monkeypatch.setattr(devmod, "_cupy", None)
    path = tmp_path / "gpu.fn"
    fn.save({"w": fn.arange(4)}, path)
    with zipfile.ZipFile(path) as zf:  # rewrite the manifest as if saved from cuda:1
        m = json.loads(zf.read("manifest.json"))
        npy_bytes = zf.read("data/0.npy")
    m["tensors"][0]["device"] = "cuda:1"
    path.write_bytes(make_zip({"manifest.json": m, "data/0.npy": npy_bytes}))
    with pytest.raises(SerializationError, match="saved on cuda:1.*map_location='cpu'") as info:
        fn.load(path)
    assert str(path) in str(info.value)
    for where in ("cpu", fn.device("cpu"), {"cuda:1": "cpu"}):
        out = fn.load(path, map_location=where)
        assert same(out["w"], fn.arange(4))


# ---- nn state dicts ------------------------------------------------------------------------

def test_mlp_state_dict_round_trip_gives_bit_identical_outputs(tmp_path):
    nn = pytest.importorskip("fusionnet.nn")
    if not hasattr(nn, "Sequential") or not hasattr(nn, "Linear"):
        pytest.skip("fusionnet.nn has no Linear/Sequential yet")

    def mlp():
        return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))

    fn.manual_seed(0)
    net = mlp()
    path = tmp_path / "mlp.fn"
    sd = net.state_dict()
    fn.save(sd, path)
    loaded = fn.load(path)
    assert type(loaded) is OrderedDict and list(loaded) == list(sd)
    fn.manual_seed(1)
    fresh = mlp()
    x = fn.randn(5, 20)
    assert not np.array_equal(fresh(x).detach().numpy(), net(x).detach().numpy())
    fresh.load_state_dict(loaded)
    assert fresh(x).detach().numpy().tobytes() == net(x).detach().numpy().tobytes()


def test_parameters_load_back_as_parameters(tmp_path):
    nn = pytest.importorskip("fusionnet.nn")
    p = nn.Parameter(fn.randn(3))
    frozen = nn.Parameter(fn.randn(2), requires_grad=False)
    a, b = roundtrip([p, frozen], tmp_path)
    assert type(a) is nn.Parameter and same(a, p)
    assert type(b) is nn.Parameter and not b.requires_grad and same(b, frozen)


def test_uninitialized_parameters_cannot_be_saved(tmp_path):
    nn = pytest.importorskip("fusionnet.nn")
    if not hasattr(nn, "LazyLinear"):
        pytest.skip("no LazyLinear")
    with pytest.raises(SerializationError, match="cannot be saved"):
        fn.save(nn.LazyLinear(3).state_dict(keep_vars=True), tmp_path / "lazy.fn")
    assert os.listdir(tmp_path) == []


# ---- GPU -----------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_save_and_load_with_map_location(tmp_path):
    x = fn.randn(3, 4, device="cuda", requires_grad=True)
    i = fn.arange(5, device="cuda")
    path = tmp_path / "gpu.fn"
    fn.save({"x": x, "i": i}, path)
    same_dev = fn.load(path)
    assert same_dev["x"].device == x.device and same(same_dev["x"], x) and same(same_dev["i"], i)
    cpu = fn.load(path, map_location="cpu")
    assert cpu["x"].device == fn.device("cpu") and cpu["x"].requires_grad
    assert cpu["x"]._data.tobytes() == x._host().tobytes()
    back = fn.load(tmp_path / "gpu.fn", map_location=fn.device("cuda", 0))
    assert back["i"].device == fn.device("cuda:0")
    fn.save(cpu, tmp_path / "cpu.fn")
    moved = fn.load(tmp_path / "cpu.fn", map_location="cuda")
    assert moved["x"].is_cuda and same(moved["x"], x.detach().requires_grad_(True))
