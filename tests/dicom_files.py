"""Small DICOM files written with pydicom for the tests, in the transfer syntaxes scanners use."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


def xray_pattern(rows: int = 48, cols: int = 64, top: int = 4000) -> np.ndarray:
    """uint16 [rows, cols]: a horizontal ramp 0..top with a bright square top-left (orientation is visible)."""
    ramp = np.linspace(0, top * 0.6, cols)[None, :].repeat(rows, 0)
    img = ramp.copy()
    img[2:14, 2:14] = top
    return np.round(img).astype(np.uint16)


def write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    syntax: str = "explicit",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    view: str | None = "PA",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    lut_bits: int = 16,
    frames: int = 1,
) -> Path:
    """Write `stored` as a CR DICOM file.

    syntax: "explicit" (Explicit VR Little Endian), "implicit", "rle", "jpeg2000" (lossless), "jpeg-baseline"
    (8-bit, via Pillow's JPEG encoder, encapsulated).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    ds.PatientName, ds.PatientID = "Test^Synthetic", "0"
    if view is not None:
        ds.ViewPosition = view
    if syntax == "jpeg-baseline":
        data = stored.astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(data).save(buf, format="JPEG", quality=95)
        ds.set_pixel_data(data, photometric, 8)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    else:
        arr = np.stack([stored] * frames) if frames > 1 else stored
        ds.set_pixel_data(arr, photometric, bits_stored)
        if syntax == "rle":
            ds.compress(RLELossless)
        elif syntax == "jpeg2000":
            ds.compress(JPEG2000Lossless)
        elif syntax == "implicit":
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        elif syntax != "explicit":
            raise ValueError(syntax)
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope or 1.0, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, lut_bits]
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUT Data: US or OW; pydicom needs told
        ds.VOILUTSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    return path


def deflated_dicom(
    rows: int, cols: int, pixel_bytes: int | None = None, *, bits: int = 16, fill: int = 0, view: str | None = "PA"
) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM (1.2.840.10008.1.2.1.99) built piece by piece, so its pixel data may
    be far larger than what its Rows x Columns say (a deflate bomb) without ever being held in memory here."""
    import struct
    import zlib

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["deflated", str(rows), str(cols)])
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CR_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    if view is not None:
        ds.ViewPosition = view
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    size = rows * cols * bits // 8 if pixel_bytes is None else pixel_bytes
    size += size % 2  # element lengths are even
    vr = b"OW" if bits > 8 else b"OB"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [
        head.getvalue(),
        compressor.compress(body.getvalue() + b"\xe0\x7f\x10\x00" + vr + b"\0\0" + struct.pack("<I", size)),
    ]
    chunk = bytes([fill]) * (4 << 20)
    left = size
    while left:
        out.append(compressor.compress(chunk[: min(left, len(chunk))]))
        left -= min(left, len(chunk))
    out.append(compressor.flush())
    return b"".join(out)
