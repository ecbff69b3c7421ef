"""Training sets that stream: image folders, memory-mapped .npy files, and --loading stream on tensors.

Streaming and reading whole must give bit-identical batches (dynamic binarization included), every bad
folder or option a one-line error, and --loading auto must choose by the memory budget.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae import ConfigError, DataConfig, DataError, RunConfig, load_dataset
from pyro_vae import streaming as streaming_module
from pyro_vae.build import validate
from pyro_vae.data import Dataset, _as_images, _split, binarize, fingerprint
from pyro_vae.streaming import FolderRows, NpyRows, TensorRows


def _pixels(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _image_folder(root: Path, per_class: int = 20, size: tuple[int, int] = (6, 5)) -> dict:
    """Two class folders of tiny grayscale PNGs; returns {pixel bytes: label}."""
    rng = np.random.default_rng(0)
    written = {}
    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = _pixels(rng, size)
            Image.fromarray(a, mode="L").save(root / name / f"{i:02d}.png")
            written[a.tobytes()] = label
    return written


def _npy(path: Path, n: int = 300) -> np.ndarray:
    x = _pixels(np.random.default_rng(1), (n, 8, 8))
    np.save(path, x)
    return x


# --- folders ---


def test_a_labelled_folder_loads_with_its_labels_and_pixels(tmp_path) -> None:
    written = _image_folder(tmp_path / "pics")
    ds = load_dataset(DataConfig(f"folder:{tmp_path / 'pics'}", workers=0))
    assert isinstance(ds.train, FolderRows) and ds.streaming
    assert ds.x_shape == (1, 6, 5) and ds.train.shape == (32, 1, 6, 5)
    assert ds.test.shape == (8, 1, 6, 5) and ds.test.dtype == torch.float32
    assert ds.num_classes == 2
    train = ds.to("cpu").train  # read whole
    for x, y in ((train, ds.train_labels), (ds.test, ds.test_labels)):
        for row, label in zip(x, y.tolist()):
            pixels = (row[0] * 255).round().to(torch.uint8).numpy()
            assert written[pixels.tobytes()] == label  # the right image, label and scale
    # the split is fixed: the same rows again
    again = load_dataset(DataConfig(f"folder:{tmp_path / 'pics'}", workers=0))
    assert torch.equal(again.test, ds.test) and fingerprint(again) == fingerprint(ds)
    for image in (tmp_path / "pics").glob("*/*.png"):  # every image written again
        os.utime(image, ns=(10**18, 10**18))
    again = load_dataset(DataConfig(f"folder:{tmp_path / 'pics'}", workers=0))
    assert torch.equal(again.test, ds.test) and fingerprint(again) != fingerprint(ds)


def test_an_unlabelled_folder_converted_and_resized(tmp_path) -> None:
    rng = np.random.default_rng(2)
    for i in range(10):  # grayscale and RGB of different sizes: both options are needed
        mode, shape = ("L", (9, 7)) if i % 2 else ("RGB", (5, 6, 3))
        Image.fromarray(_pixels(rng, shape), mode=mode).save(tmp_path / f"{i}.PNG")
    ds = load_dataset(
        DataConfig(f"folder:{tmp_path}", image_size=(4,), image_mode="RGB", workers=0)
    )
    assert ds.train_labels is None and ds.num_classes is None
    assert ds.x_shape == (3, 4, 4) and ds.test.shape == (2, 3, 4, 4)
    x = ds.to("cpu").train
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    grey = ds.to("cpu", loading="device").test  # a resized grayscale image has equal channels
    assert grey.shape[1] == 3


def test_a_folder_trains_end_to_end(tmp_path) -> None:
    from pyro_vae import train
    from pyro_vae.config import ModelConfig, TrainConfig

    _image_folder(tmp_path / "pics")
    result = train(
        RunConfig(
            data=DataConfig(dataset=f"folder:{tmp_path / 'pics'}", loading="stream", workers=0),
            model=ModelConfig(hidden=(16,), latent_dim=2),
            train=TrainConfig(epochs=1, batch_size=8, device="cpu"),
        ),
        progress=False,
    )
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_elbo"])


# --- memory-mapped .npy ---


def test_a_memory_mapped_npy_streams_the_values_of_the_in_memory_reading(tmp_path) -> None:
    x = _npy(tmp_path / "x.npy")
    ds = load_dataset(DataConfig(str(tmp_path / "x.npy")))
    assert isinstance(ds.train, NpyRows) and isinstance(ds.train.array, np.memmap)
    # the reading of the whole file, as before streaming
    whole = _as_images({"x": x}, tmp_path / "x.npy")["x"]
    assert torch.equal(whole, torch.as_tensor(x[:, None].astype(np.float32) / np.float32(255)))
    xtr, xte, _, _ = _split(whole, None, 0.2)
    assert ds.train.shape == xtr.shape and torch.equal(ds.test, xte)
    idx = torch.tensor([7, 0, 239, 3, 3])
    assert torch.equal(ds.train[idx], xtr[idx])
    assert torch.equal(ds.train[10:20], xtr[10:20])
    assert torch.equal(ds.train.__getitems__([5, 1]), xtr[[5, 1]])
    streamed = ds.to("cpu", loading="stream", workers=0)
    assert isinstance(streamed.train.array, np.memmap)  # still not read whole
    assert torch.equal(streamed.rows(idx), xtr[idx])
    assert torch.equal(ds.to("cpu", loading="device").train, xtr)
    # small files are fingerprinted by value, as the in-memory data set is (runs still resume)
    assert fingerprint(ds) == fingerprint(Dataset(ds.name, xtr, xte))


def test_npy_fingerprint_follows_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(streaming_module, "VALUE_HASH_BYTES", 0)  # hash the identity, as for huge
    path = tmp_path / "x.npy"
    _npy(path)
    first = fingerprint(load_dataset(DataConfig(str(path))))
    assert fingerprint(load_dataset(DataConfig(str(path)))) == first
    os.utime(path, ns=(10**18, 10**18))  # the same values, but the file was written again
    touched = fingerprint(load_dataset(DataConfig(str(path))))
    assert touched != first
    first = touched
    assert fingerprint(load_dataset(DataConfig(str(path), test_fraction=0.3))) != first
    np.save(path, _pixels(np.random.default_rng(5), (300, 8, 8)))
    os.utime(path, ns=(1, 1))  # a new file, even where the clock would not tell
    assert fingerprint(load_dataset(DataConfig(str(path)))) != first


def test_nan_in_a_float_file_too_large_to_scan_fails_on_the_batch(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(streaming_module, "SCAN_BYTES", 0)
    x = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    x[31, 2] = np.nan
    np.save(tmp_path / "f.npy", x)
    ds = load_dataset(DataConfig(str(tmp_path / "f.npy"))).to("cpu", loading="stream")
    everything = [torch.arange(len(ds.train))]
    with pytest.raises(DataError, match=r"f.npy.*NaN.*\(row 31 of the file\)") as e:
        list(ds.batches(everything))
    assert "\n" not in str(e.value)


# --- streaming and reading whole agree ---


def _tensor_dataset() -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(70, 1, 4, 4, generator=g)
    return Dataset("tiny", x[:50], x[50:], torch.arange(50) % 2, torch.arange(20) % 2, 2)


def _index_batches(n: int) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=torch.Generator().manual_seed(3)).split(16))


def _epoch(ds: Dataset, loading: str, workers: int) -> list[torch.Tensor]:
    d = ds.to("cpu", loading=loading, workers=workers)
    assert d.streaming == (loading == "stream") and d.device == torch.device("cpu")
    torch.manual_seed(11)
    out = [x.clone() for x in d.batches(_index_batches(len(ds.train)))]
    out.append(torch.rand(3))  # and the global random state after the epoch
    return out


@pytest.mark.parametrize("source", ["npy", "folder", "tensor"])
@pytest.mark.parametrize("mode", ["none", "dynamic"])
def test_streaming_gives_the_batches_of_reading_whole(tmp_path, source: str, mode: str) -> None:
    if source == "npy":
        _npy(tmp_path / "x.npy", n=90)
        ds = load_dataset(DataConfig(str(tmp_path / "x.npy"), binarize=mode))
    elif source == "folder":
        _image_folder(tmp_path / "pics", per_class=12)
        ds = load_dataset(DataConfig(f"folder:{tmp_path / 'pics'}", binarize=mode, workers=0))
    else:
        ds = binarize(_tensor_dataset(), mode)
    whole, streamed = _epoch(ds, "device", 0), _epoch(ds, "stream", 0)
    assert len(whole) == len(streamed) == len(_index_batches(len(ds.train))) + 1
    assert all(torch.equal(a, b) for a, b in zip(whole, streamed))
    if mode == "dynamic":
        assert set(torch.cat(whole[:-1]).unique().tolist()) <= {0.0, 1.0}


def test_streaming_with_worker_processes(tmp_path) -> None:
    _npy(tmp_path / "x.npy", n=120)
    ds = load_dataset(DataConfig(str(tmp_path / "x.npy"), binarize="dynamic"))
    whole, streamed = _epoch(ds, "device", 0), _epoch(ds, "stream", 2)
    assert all(torch.equal(a, b) for a, b in zip(whole, streamed))
    # a worker's read error comes back as the same one-line DataError
    _image_folder(tmp_path / "pics", per_class=6)
    cut = tmp_path / "pics" / "dog" / "03.png"
    Image.fromarray(_pixels(np.random.default_rng(0), (64, 64)), mode="L").save(cut)
    cut.write_bytes(cut.read_bytes()[:60])  # the header survives, the pixels do not
    source, _, _ = streaming_module.scan_folder(tmp_path / "pics", image_size=(6, 5))
    with pytest.raises(DataError, match=r"cannot decode the image .*03\.png") as e:
        everything = [torch.arange(len(source))]
        list(streaming_module.read_batches(source, everything, "cpu", workers=2))
    assert "\n" not in str(e.value)


def test_loading_auto_follows_the_memory_budget(tmp_path, monkeypatch) -> None:
    _npy(tmp_path / "x.npy", n=100)
    ds = load_dataset(DataConfig(str(tmp_path / "x.npy")))
    need = 80 * 64 * 4  # the training set in float32
    monkeypatch.setattr(streaming_module, "memory_budget", lambda device: need)
    whole = ds.to("cpu", loading="auto")
    assert not whole.streaming and isinstance(whole.train, torch.Tensor)
    monkeypatch.setattr(streaming_module, "memory_budget", lambda device: need - 1)
    streamed = ds.to("cpu", loading="auto")
    assert streamed.streaming and isinstance(streamed.train, NpyRows)
    assert isinstance(streamed.test, torch.Tensor)  # the test set is a tensor either way
    # a tensor already on the device stays there; streaming it would save nothing
    assert not _tensor_dataset().to("cpu", loading="auto").streaming
    stream = _tensor_dataset().to("cpu", loading="stream")
    assert stream.streaming and isinstance(stream.train, TensorRows)
    monkeypatch.undo()
    assert streaming_module.memory_budget("cpu") > 0


def test_static_binarization_reads_whole_or_refuses_to_stream(tmp_path, monkeypatch) -> None:
    x = _npy(tmp_path / "x.npy", n=60)
    ds = load_dataset(DataConfig(str(tmp_path / "x.npy"), binarize="static"))
    whole = _as_images({"x": x}, tmp_path / "x.npy")["x"]
    xtr, xte, _, _ = _split(whole, None, 0.2)
    in_memory = binarize(Dataset("x", xtr, xte), "static")
    assert torch.equal(ds.to("cpu").train, in_memory.train)  # the same fixed draw
    assert torch.equal(ds.test, in_memory.test)
    assert fingerprint(ds) == fingerprint(replace_name(in_memory, ds.name))
    for call in (
        lambda: ds.to("cpu", loading="stream"),
        lambda: ds.rows(torch.arange(3)),
        lambda: next(ds.batches([torch.arange(3)])),
        lambda: validate(
            RunConfig(data=DataConfig(str(tmp_path / "x.npy"), binarize="static", loading="stream"))
        ),
    ):
        with pytest.raises(
            ConfigError, match="--binarize static .* needs the training set in"
        ) as e:
            call()
        assert "\n" not in str(e.value)
    monkeypatch.setattr(streaming_module, "memory_budget", lambda device: 0)
    with pytest.raises(ConfigError, match="--loading auto streams it"):
        ds.to("cpu", loading="auto")


def replace_name(ds: Dataset, name: str) -> Dataset:
    from dataclasses import replace

    return replace(ds, name=name)


# --- bad input: one line, the right type ---


def _save(path: Path, shape: tuple[int, ...] = (6, 5), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pixels(np.random.default_rng(0), shape), mode=mode).save(path)


def _mixed_sizes(root: Path) -> None:
    _save(root / "a.png", (6, 5))
    _save(root / "b.png", (7, 5))


def _mixed_modes(root: Path) -> None:
    _save(root / "a.png", (6, 5))
    _save(root / "b.png", (6, 5, 3), "RGB")


def _palette(root: Path) -> None:
    _save(root / "a.png")
    Image.new("P", (5, 6)).save(root / "p.png")


def _deep(root: Path) -> None:
    Image.fromarray(np.zeros((6, 5), dtype=np.uint16)).save(root / "deep.png")


def _corrupt(root: Path) -> None:
    _save(root / "a.png")
    (root / "bad.png").write_bytes(b"not a png at all")


def _both(root: Path) -> None:
    _save(root / "a.png")
    _save(root / "cls" / "b.png")


def _empty_class(root: Path) -> None:
    _save(root / "cat" / "a.png")
    (root / "dog").mkdir()


def _no_images(root: Path) -> None:
    (root / "notes.txt").write_text("hello")


BAD_FOLDERS = [
    (lambda root: None, "missing", "no such folder: .*missing"),
    (lambda root: root.write_text("x"), "file", "is not a folder"),
    (_no_images, "", r"no images in .*\.png.*\.jpg|no images in .*\.jpg.*\.png"),
    (_corrupt, "", r"cannot read the image .*bad\.png.*replace or remove it"),
    (
        _mixed_sizes,
        "",
        r"differ in size: .*a\.png is 6x5 \(H x W\), .*b\.png is 7x5.*--image-size H W",
    ),
    (_mixed_modes, "", r"differ in mode: .*a\.png is L, .*b\.png is RGB; pass --image-mode"),
    (_palette, "", r"p\.png has PIL mode P; pass --image-mode"),
    (_deep, "", r"deep\.png is a 16- or 32-bit image"),
    (_both, "", "both directly .* and in subfolders"),
    (_empty_class, "", r"class folder .*dog holds no images"),
]


@pytest.mark.parametrize(("make", "name", "match"), BAD_FOLDERS)
def test_bad_folders_are_one_line_data_errors(tmp_path, make, name: str, match: str) -> None:
    root = tmp_path / (name or "pics")
    if name != "missing" and name != "file":
        root.mkdir()
    make(root)
    with pytest.raises(DataError, match=match) as e:
        load_dataset(DataConfig(f"folder:{root}", workers=0))
    assert "\n" not in str(e.value)


def test_a_truncated_image_fails_naming_it(tmp_path) -> None:
    _save(tmp_path / "a.png", (40, 40))
    (tmp_path / "a.png").write_bytes((tmp_path / "a.png").read_bytes()[:60])
    _save(tmp_path / "b.png", (40, 40))
    with pytest.raises(DataError, match=r"cannot decode the image .*a\.png") as e:
        load_dataset(DataConfig(f"folder:{tmp_path}", workers=0)).to("cpu")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            {"image_size": (28,)},
            "--image-size is not used by --dataset digits; it is read by folder",
        ),
        ({"image_mode": "L"}, "--image-mode is not used by --dataset digits.*folder:PATH"),
        ({"dataset": "folder:x", "image_size": (0,)}, r"sides must lie in 1\.\.32768"),
        ({"dataset": "folder:x", "image_size": (2**15 + 1,)}, r"1\.\.32768"),
        ({"dataset": "folder:x", "image_size": (2, 3, 4)}, "takes H W or S"),
        ({"dataset": "folder:x", "image_mode": "RGBA"}, "--image-mode must be L .* or RGB"),
        ({"loading": "sometimes"}, "unknown --loading 'sometimes'"),
        ({"workers": 65}, r"--workers must be a whole number in 0\.\.64"),
        ({"workers": -1}, r"0\.\.64"),
        ({"loading": "device", "workers": 4}, "--loading device reads it whole"),
        ({"dataset": "folder:"}, "needs the folder's path"),
        ({"dataset": "imagenet"}, "unknown data set 'imagenet'.*folder:PATH"),
    ],
)
def test_bad_data_options_are_one_line_config_errors(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        validate(RunConfig(data=DataConfig(**data)))
    assert "\n" not in str(e.value)


def test_good_folder_options_validate() -> None:
    for data in (
        {"image_size": (28,), "image_mode": "L"},
        {"image_size": (32, 48), "image_mode": "RGB", "loading": "stream", "workers": 0},
    ):
        validate(RunConfig(data=DataConfig(dataset="folder:somewhere", **data)))
