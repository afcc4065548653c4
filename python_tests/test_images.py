"""Image folders: ImageNet labels from WordNet-id folders, the fingerprint of a file list, the
one-line unreadable-image error, and ImageLoader's image ids and skipping."""

import os

import pytest
import torch

import summit_fast
from summit_fast.images import ImageFolderDataset, ImageLoader, Preprocess, UnreadableImageError
from summit_fast.models import resnet18

from image_folders import write_images
from tiny_models import TinyInception


def test_wordnet_id_folders_are_labelled_with_imagenet_indices(tmp_path):
    # ImageNet's train/val layout: n01440764/<anything>.JPEG; tench and brambling are classes 0 and 10.
    write_images(tmp_path, classes=("n01440764", "n01530575"))
    dataset = ImageFolderDataset(tmp_path, None)
    assert dataset.label_mode == "imagenet" and dataset.targets == [0] * 3 + [10] * 3
    assert dataset.classes[10] == "brambling, Fringilla montifringilla"
    folders = ImageFolderDataset(tmp_path, None, labels="folders")  # asked for: folder positions
    assert folders.targets == [0] * 3 + [1] * 3 and folders.classes == ["n01440764", "n01530575"]


def test_a_file_whose_folder_and_name_disagree_is_refused(tmp_path):
    write_images(tmp_path, classes=("n01440764",))
    (tmp_path / "n01440764" / "0.png").rename(tmp_path / "n01440764" / "n01530575_0.png")
    with pytest.raises(ValueError, match="n01530575_0.png: its folder n01440764 and its file name name two different"):
        ImageFolderDataset(tmp_path, None)


def test_fingerprint_follows_paths_sizes_times_and_labels(tmp_path):
    """Cheap by design: one stat per file, no reads."""
    write_images(tmp_path)
    path = tmp_path / "dog" / "2.png"

    def fingerprint(labels="auto"):
        return ImageFolderDataset(tmp_path, None, labels=labels).fingerprint()

    first = fingerprint()
    assert fingerprint() == first
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: same size, a newer time
    assert fingerprint() != first
    path.write_bytes(path.read_bytes() + b"\0")  # another size, with the old time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint() != first
    path.write_bytes(path.read_bytes()[:-1])  # the same size and time again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint() == first
    assert fingerprint("none") != first  # labels are part of it
    path.rename(tmp_path / "dog" / "3.png")
    assert fingerprint() != first


def test_worker_traceback_is_reduced_to_the_errors_own_line():
    worker = ("Caught UnreadableImageError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
              "last):\n  File \"x.py\", line 1, in f\n    raise X\nPIL.UnidentifiedImageError: cannot identify\n\n"
              "The above exception was the direct cause of the following exception:\n\nTraceback (most recent call "
              "last):\n  File \"y.py\", line 2\nsummit_fast.images.UnreadableImageError: cannot read image file "
              "a: b.png: cannot identify\n")
    assert str(UnreadableImageError(worker)) == "cannot read image file a: b.png: cannot identify"
    assert isinstance(UnreadableImageError("x"), OSError)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_raises_one_line_naming_the_file(tmp_path, workers):
    write_images(tmp_path)
    (tmp_path / "cat" / "1.png").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path, resnet18().PREPROCESS)
    with pytest.raises(UnreadableImageError) as info:
        list(ImageLoader(dataset, batch_size=2, num_workers=workers))
    assert str(info.value) == (f"cannot read image file {tmp_path / 'cat' / '1.png'}: cannot identify image file "
                               f"'{tmp_path / 'cat' / '1.png'}'")


def test_image_loader_names_images_by_dataset_index_and_skips(tmp_path):
    write_images(tmp_path)
    (tmp_path / "cat" / "1.png").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path, resnet18().PREPROCESS)
    loader = ImageLoader(dataset, batch_size=2, sampler=summit_fast.ShardSampler(dataset, rank=1, world_size=2),
                         skip_unreadable=True)
    assert summit_fast.distributed.ShardIds.of(loader) is loader  # aggregate asks the loader for the ids
    seen = [(loader.image_ids(None, images).tolist(), labels.tolist(), images.shape[0]) for images, labels in loader]
    assert seen == [([3], [1], 1), ([5], [1], 1)]  # items 1 (cat/1.png, skipped) and 3 | 5
    assert [index for index, _ in loader.skipped] == [1]
    every_one = ImageLoader(dataset, batch_size=1, skip_unreadable=True)
    batches = [images.shape for images, _ in every_one]
    assert batches[1] == (0, 3, 0, 0) and all(b == (1, 3, 224, 224) for i, b in enumerate(batches) if i != 1)
    assert len(every_one.skipped) == 1 and "cannot identify image file" in every_one.skipped[0][1]


def test_a_resumed_run_reads_only_the_images_it_has_not_counted(tmp_path):
    write_images(tmp_path / "images")  # 6 images: 3 batches of 2
    reads = []

    class CountingDataset(ImageFolderDataset):
        def __getitem__(self, index):
            reads.append(index)
            return super().__getitem__(index)

    class FailingLoader(ImageLoader):  # stops with an error after two batches
        def batches_from(self, start):
            for n, batch in enumerate(super().batches_from(start)):
                if n == 2:
                    raise OSError("disk went away")
                yield batch

    tiny = Preprocess(9, 1.0, True, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0))  # TinyInception's 9x9 input
    (tmp_path / "images" / "cat" / "1.png").write_text("not an image")
    dataset = CountingDataset(tmp_path / "images", tiny)
    torch.manual_seed(0)
    net = TinyInception().eval()
    options = dict(backend="torch", progress=False, num_classes=5, examples=2)
    with pytest.raises(OSError, match="disk went away"):
        summit_fast.aggregate(net, FailingLoader(dataset, batch_size=2, skip_unreadable=True),
                              checkpoint_dir=tmp_path / "ckpt", checkpoint_every=1, **options)
    reads.clear()
    loader = ImageLoader(dataset, batch_size=2, skip_unreadable=True)
    resumed = summit_fast.aggregate(net, loader, checkpoint_dir=tmp_path / "ckpt", **options)
    assert sorted(reads) == [4, 5]  # the third batch only
    # cat/1.png (item 1) was skipped before the checkpoint: the resumed pass still reports it.
    assert [index for index, _ in loader.skipped] == [1]
    whole = ImageLoader(dataset, batch_size=2, skip_unreadable=True)
    assert resumed == summit_fast.aggregate(net, whole, **options)
    assert whole.skipped == loader.skipped
