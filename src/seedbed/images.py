"""Container image references, split the one way the rest of seedbed needs.

``[registry[:port]/]path[:tag][@digest]``: a colon in the last path segment starts the tag (a
registry's port sits before the first slash); ``@`` starts the digest. Written here because the
reference grammar is three lines of string handling, not worth a dependency.
"""

from __future__ import annotations

import msgspec


class ImageRef(msgspec.Struct, frozen=True):
    repository: str  # registry and path, without tag or digest
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The last path segment, lower-cased (``gitea`` for ``docker.gitea.com/gitea:1.27-rootless``)."""
        return self.repository.rsplit("/", 1)[-1].lower()


def parse(image: str) -> ImageRef:
    ref, _, digest = image.strip().partition("@")
    head, _, last = ref.rpartition("/")
    name, colon, tag = last.partition(":")
    repository = f"{head}/{name}" if head else name
    return ImageRef(repository, tag if colon else None, digest or None)
