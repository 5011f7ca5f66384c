"""A copy into an S3 store that stalls mid-upload, for a test to kill (run as a script).

``python stalled_copy.py SRC URL NAME OPTIONS_JSON``

Copies the file ``SRC`` into the store at ``URL`` as checkpoint ``NAME`` (s3fs storage
options as JSON). Once the first part of a multipart upload has reached the server it
prints ``UPLOADING`` and sleeps: the store is locked and an incomplete multipart upload
exists, as when a copy is killed halfway. Nothing else about the copy is changed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def main() -> None:
    src, url, name, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    import s3fs.core

    from ckpt_notebook.manager.copying import copy
    from ckpt_notebook.storage import Store

    upload_chunk = s3fs.core.S3File._upload_chunk

    def stall(self: Any, final: bool = False) -> Any:
        result = upload_chunk(self, final)
        if getattr(self, "parts", None):  # a part is on the server
            print("UPLOADING", flush=True)
            time.sleep(3600)
        return result

    s3fs.core.S3File._upload_chunk = stall  # type: ignore[method-assign]
    copy(src, name, to=Store(url, **options))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
