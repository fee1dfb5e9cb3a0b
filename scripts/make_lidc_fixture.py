#!/usr/bin/env python
"""Make the committed crop of LIDC-IDRI-0314 (``book/data/lidc-idri-0314/crop.npz``) from the full
series in ``../shared/realct/lidc-idri-0314`` (or ``$LUNGSEG_REALCT/lidc-idri-0314``).

The crop is 24 slices x 128 x 128 pixels (24 mm x 100 mm x 100 mm) centred on the nodule: the CT in
HU (int16) and, per voxel, how many of the four LIDC readers drew the nodule. The case is CC BY 3.0;
the attribution is in the README.md beside the crop and in the npz itself.

Usage:
    python scripts/make_lidc_fixture.py [--source DIR] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lungseg.analysis.real_ct import LIDC_CROP, make_crop, save_crop  # noqa: E402

ATTRIBUTION = (
    "LIDC-IDRI subject LIDC-IDRI-0314 (Armato SG III et al., The Lung Image Database Consortium (LIDC) and "
    "Image Database Resource Initiative (IDRI): a completed reference database of lung nodules on CT scans, "
    "Med. Phys. 38:915-931, 2011; data doi:10.7937/K9/TCIA.2015.LO9QL9SX; The Cancer Imaging Archive, Clark K "
    "et al., J. Digit. Imaging 26:1045-1057, 2013), via the test data of the oncoray/mirp project; cropped "
    "by lungseg (scripts/make_lidc_fixture.py)."
)
LICENCE = "CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/)"


def main(argv: list[str] | None = None) -> int:
    import nibabel as nib
    import numpy as np

    from lungseg.data.dicom import read_dicom_series

    default = Path(os.environ.get("LUNGSEG_REALCT", ROOT.parent / "shared" / "realct")) / "lidc-idri-0314"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(default), help=f"the case's folder (default: {default})")
    ap.add_argument("--out", default=str(ROOT / LIDC_CROP), help="npz to write")
    args = ap.parse_args(argv)
    source = Path(args.source)
    (volume,) = read_dicom_series(source / "ct")
    # NIfTI (i, j, k) = (column, row, slice from the most inferior); the series is (slice, row, column)
    # with slice 0 the most inferior (its affine's z step is positive), so a transpose aligns them.
    readers = np.asarray(nib.load(source / "nodule_readers.nii.gz").dataobj).transpose(2, 1, 0)
    consensus = np.asarray(nib.load(source / "nodule_consensus.nii.gz").dataobj).transpose(2, 1, 0)
    if not np.array_equal(readers >= 2, consensus > 0):
        raise SystemExit("the consensus file is not 'at least 2 of 4 readers' of the readers file")
    if volume.affine is None or volume.affine[2, 2] <= 0:
        raise SystemExit("expected the series ordered from the most inferior slice")
    crop = make_crop(volume.image, readers, volume.spacing, size=(24, 128, 128),
                     meta={"source": "LIDC-IDRI-0314", "licence": LICENCE, "attribution": ATTRIBUTION})
    inside = crop.image[crop.consensus].mean()
    around = crop.image[~(crop.readers > 0)].mean()
    print(f"crop origin {crop.origin}, nodule mean {inside:.0f} HU, rest of crop {around:.0f} HU")
    path = save_crop(crop, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
