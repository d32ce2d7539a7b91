"""Lung and lesion segmentation behind one small interface (see :mod:`segmentation.base`)."""
