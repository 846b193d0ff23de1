"""The workload image as an OCI image-layout tarball, for engines that import only images.

containerd's `ctr image import` takes an OCI (or `docker save`) archive, not the plain
rootfs tarball docker and podman import. The archive holds that same tarball, byte for
byte, as its one uncompressed layer, so every engine runs the same bytes (its digest is
the image's digest). Layout: the OCI image spec's image-layout.md.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from bench.image import WorkloadImage

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
# containerd names an imported image after this annotation of the index's manifest.
NAME_ANNOTATION = "io.containerd.image.name"


def _json_blob(document: dict[str, object]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_oci_archive(image: WorkloadImage, reference: str, archive: Path) -> None:
    """Write `image` as an OCI image-layout tarball at `archive`, named `reference`."""
    layer_size = image.tarball.stat().st_size
    config = _json_blob(
        {
            "architecture": _oci_architecture(),
            "os": "linux",
            "config": {"Labels": {"bench": "1"}},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{image.digest}"]},
        }
    )
    manifest = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": f"sha256:{_sha256(config)}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": LAYER_MEDIA_TYPE,
                    "digest": f"sha256:{image.digest}",
                    "size": layer_size,
                }
            ],
        }
    )
    index = _json_blob(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [
                {
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "digest": f"sha256:{_sha256(manifest)}",
                    "size": len(manifest),
                    "annotations": {NAME_ANNOTATION: reference},
                }
            ],
        }
    )
    with tarfile.open(archive, "w") as tar:
        _add_bytes(tar, "oci-layout", _json_blob({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", index)
        _add_bytes(tar, f"blobs/sha256/{_sha256(config)}", config)
        _add_bytes(tar, f"blobs/sha256/{_sha256(manifest)}", manifest)
        tar.add(image.tarball, arcname=f"blobs/sha256/{image.digest}", recursive=False)


def _oci_architecture() -> str:
    """The host's architecture in OCI (Go) terms: amd64, arm64, ..."""
    import platform

    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(
        machine, machine
    )
