"""DICOM input through pydicom: windowing, MONOCHROME1, and one clear reason for files it cannot use.

The files are written at test time with pydicom (explicit VR little endian, uncompressed).
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tests import bad_inputs as bad
from xraylib import data, images


def write_dicom(path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", window=None, frames: int = 1,
                pixel_data: bool = True, samples: int = 1):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", "anon"
    ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = samples, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if samples == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if pixel_data:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(h: int = 32, w: int = 40) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) * 50).astype(np.uint16)  # 0 .. 3550 of 4095


def test_monochrome2_is_read_with_its_window(tmp_path):
    path = write_dicom(tmp_path / "chest.dcm", ramp(), window=(1000, 1000))  # shows 500..1500 as black..white
    gray = images.load_gray(path)
    assert gray.shape == (32, 40) and gray.dtype == np.uint8
    assert gray[0, 0] == 0 and gray[-1, -1] == 255  # clipped below and above the window
    middle = (np.add.outer(np.arange(32), np.arange(40)) * 50 == 1000)
    assert 100 < gray[middle].mean() < 155  # the window centre is mid-grey
    info = images.inspect_image(path)
    assert info == {"width": 40, "height": 32, "mode": "DICOM MONOCHROME2 12-bit"}


def test_monochrome1_is_inverted_and_found_without_the_suffix(tmp_path):
    plain = images.load_gray(write_dicom(tmp_path / "a.dcm", ramp()))
    inverted = write_dicom(tmp_path / "b.dcm", ramp(), photometric="MONOCHROME1")
    renamed = inverted.rename(tmp_path / "b_image")  # no suffix: the DICM preamble tells
    assert images.is_dicom(renamed)
    np.testing.assert_allclose(images.load_gray(renamed), 255 - plain.astype(int), atol=1)  # rounding


@pytest.mark.parametrize("make, reason", [
    (lambda p: bad.text_as_image(p), "not a readable DICOM file"),
    (lambda p: write_dicom(p, ramp(), pixel_data=False), "DICOM file without pixel data"),
    (lambda p: write_dicom(p, np.stack([ramp(), ramp()]), frames=2), "DICOM file with 2 frames"),
    (lambda p: write_dicom(p, np.repeat(ramp()[..., None], 3, axis=2).transpose(2, 0, 1), photometric="RGB",
                           samples=3), "colour DICOM (RGB)"),
])
def test_unusable_dicom_files_give_one_reason(tmp_path, make, reason):
    path = make(tmp_path / "x.dcm")
    with pytest.raises(images.ImageReadError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        images.load_gray(path)


def test_dicom_files_in_a_dataset_are_read_or_quarantined(tmp_path):
    root = tmp_path / "plain"
    for k, label in enumerate(("NORMAL", "PNEUMONIA")):
        for i in range(3):
            write_dicom(root / label / f"{label}{i}.dcm", ramp() + 300 * (3 * k + i))
    bad.text_as_image(root / "NORMAL" / "broken.dcm")
    before = bad.tree_state(root)
    scan = data.scan_source("folder", root, progress=False)
    assert len(scan.manifest) == 6 and set(scan.manifest["mode"]) == {"DICOM MONOCHROME2 12-bit"}
    assert "not a readable DICOM file" in scan.quarantine.set_index("path")["reason"].iloc[0]
    assert bad.tree_state(root) == before
