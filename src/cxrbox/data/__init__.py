"""Disk to batches: DICOM, RSNA labels, preprocessing, cache, augmentation, datasets, loaders."""
