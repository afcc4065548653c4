"""Editing a saved result's manifest by hand, as a user (or a damaged disk) might: the manifest
that load reads is the one in counts.safetensors' header; manifest.json is only its copy."""

import json

from safetensors import safe_open
from safetensors.torch import save_file

from summit_fast.storage import MANIFEST_KEY


def rewrite_manifest(folder, change) -> None:
    """Replace the manifest text in ``folder``'s counts file by ``change(text)``, keeping the
    tensors (and their checksum) as they are."""
    path = str(folder / "counts.safetensors")
    with safe_open(path, framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, path, metadata=dict(metadata, **{MANIFEST_KEY: change(metadata[MANIFEST_KEY])}))


def edit_manifest(folder, **changes) -> None:
    """Set top-level fields of the manifest in ``folder``'s counts file."""
    rewrite_manifest(folder, lambda text: json.dumps(dict(json.loads(text), **changes)))
