"""lungseg: the executable companion to *Attention-Enhanced Residual U-Net with Hybrid Loss
for Robust Lung Cancer Segmentation* (Shrivastav & Pandey, 2025)."""

__version__ = "0.1.0"
