"""Image folders: ImageNet labels from WordNet-id folders."""

import pytest

from summit_fast.images import ImageFolderDataset

from image_folders import write_images


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
