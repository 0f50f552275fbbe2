"""Semantic segmentation (U-Net, FCN, DeepLab heads) and nuclei instances on the task spine."""
