"""Build src/vfmtok/assets/imagenette_sample.zip: a small class-balanced Imagenette subset at 128 px.

Run: .venv/bin/python tools/make_embedded_sample.py  (reads ../shared/data/imagenette2-224.zip)
"""

import io
import sys
import zipfile
from pathlib import Path

from PIL import Image

from vfmtok.data.imagefolder import center_crop_resize, load_rgb
from vfmtok.data.sources import EMBEDDED_SAMPLE, resolve_dataset

PER_CLASS = {"train": 40, "val": 10}
SIZE = 128


def main() -> None:
    src = resolve_dataset("imagenette")
    with zipfile.ZipFile(src) as zin:
        names = sorted(n for n in zin.namelist() if n.endswith(".JPEG"))
        tmp = EMBEDDED_SAMPLE.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zout:
            for split, k in PER_CLASS.items():
                by_class: dict[str, list[str]] = {}
                for n in names:
                    parts = n.split("/")
                    if parts[1] == split:
                        by_class.setdefault(parts[2], []).append(n)
                for wnid, members in sorted(by_class.items()):
                    for n in members[:k]:
                        img = center_crop_resize(load_rgb(zin.read(n)), SIZE)
                        buf = io.BytesIO()
                        img.save(buf, format="JPEG", quality=90)
                        zout.writestr(f"imagenette_sample/{split}/{wnid}/{Path(n).stem}.jpg", buf.getvalue())
        tmp.replace(EMBEDDED_SAMPLE)
    print(EMBEDDED_SAMPLE, EMBEDDED_SAMPLE.stat().st_size // 1024, "KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
