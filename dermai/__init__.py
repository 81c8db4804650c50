"""dermai: a dermatology triage workbench — SimCLR ResNet-18, honest metrics, calibrated triage, Grad-CAM."""

__version__ = "0.1.0"
