"""defectsynth: adversarial defect synthesis with segmentation masks (Coscia et al., ICIP 2023)."""

__version__ = "0.1.0"
